-- test/demo/check.sql: does the database hold exactly what the accepted
-- requests imply?  Run by burst.sh after each run, as a superuser, with the
-- run's requests file (request id, fate, payload; written by loadgen.c) on
-- standard input.  Prints key=value lines (psql -At -F=).
--
-- Every accepted request has its order, no request that failed or expired
-- has one, in-doubt requests may or may not (counted), and nothing else
-- does.  Each order's lines are its request's lines, each product's stock
-- went down by exactly the quantities of the processed orders, and each
-- customer's running totals are the sum of their processed orders.  Since
-- request_id is UNIQUE a request cannot have two orders; a second delivery
-- of a message that slipped past it would show as stock or totals taken
-- twice.  After a buffered run the queue must be empty and the consumer
-- must have failed no batch.
\set ON_ERROR_STOP on
CREATE TEMP TABLE req (request_id bigint PRIMARY KEY, fate text NOT NULL, payload jsonb NOT NULL);
\copy req FROM pstdin
CREATE TEMP TABLE done AS
  SELECT r.* FROM req r JOIN demo.orders o USING (request_id);
CREATE TEMP TABLE want_lines AS
  SELECT d.request_id, (l->>'product_id')::int AS product_id, (l->>'qty')::int AS qty
    FROM done d, jsonb_array_elements(d.payload->'lines') l;

CREATE TEMP TABLE result AS
SELECT
  (SELECT count(*) FROM req WHERE fate = 'accepted'
     AND request_id NOT IN (SELECT request_id FROM demo.orders)) AS missing,
  (SELECT count(*) FROM demo.orders
     WHERE request_id NOT IN (SELECT request_id FROM req)) AS extra,
  (SELECT count(*) FROM done WHERE fate IN ('failed', 'expired')) AS failed_processed,
  (SELECT count(*) FROM req WHERE fate = 'in_doubt') AS in_doubt,
  (SELECT count(*) FROM done WHERE fate = 'in_doubt') AS in_doubt_processed,
  (SELECT count(*) FROM (
     (SELECT request_id, product_id, qty FROM want_lines
      EXCEPT ALL
      SELECT o.request_id, l.product_id, l.qty FROM demo.order_lines l JOIN demo.orders o ON o.id = l.order_id)
     UNION ALL
     (SELECT o.request_id, l.product_id, l.qty FROM demo.order_lines l JOIN demo.orders o ON o.id = l.order_id
      EXCEPT ALL
      SELECT request_id, product_id, qty FROM want_lines)) x) AS lines_wrong,
  (SELECT count(*) FROM demo.products p
     LEFT JOIN (SELECT product_id, sum(qty) AS qty FROM want_lines GROUP BY 1) w ON w.product_id = p.id
    WHERE p.initial - p.stock <> coalesce(w.qty, 0)) AS stock_wrong,
  (SELECT count(*) FROM demo.customers c
     LEFT JOIN (SELECT (d.payload->>'customer_id')::int AS id, count(DISTINCT d.request_id) AS orders,
                       sum(w.qty * p.price) AS spent
                  FROM done d JOIN want_lines w USING (request_id)
                  JOIN demo.products p ON p.id = w.product_id GROUP BY 1) w USING (id)
    WHERE c.orders <> coalesce(w.orders, 0) OR c.total_spent <> coalesce(w.spent, 0)) AS customers_wrong,
  coalesce((SELECT messages FROM queue.queues WHERE queue_name = 'orders'), -1) AS queue_left,
  coalesce((SELECT failures FROM queue.consumers WHERE consumer_name = 'orders_consumer'), 0)
    AS consumer_failures;

SELECT key, value FROM result,
  LATERAL (VALUES ('missing', missing), ('extra', extra), ('failed_processed', failed_processed),
                  ('in_doubt', in_doubt), ('in_doubt_processed', in_doubt_processed),
                  ('lines_wrong', lines_wrong), ('stock_wrong', stock_wrong),
                  ('customers_wrong', customers_wrong), ('queue_left', queue_left),
                  ('consumer_failures', consumer_failures)) v(key, value);
SELECT 'check', CASE WHEN missing = 0 AND extra = 0 AND failed_processed = 0 AND lines_wrong = 0
                          AND stock_wrong = 0 AND customers_wrong = 0 AND queue_left = 0
                          AND consumer_failures = 0
                     THEN 'ok' ELSE 'FAILED' END
  FROM result;

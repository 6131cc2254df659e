-- test/demo/schema.sql: the workload of the burst demo (test/demo/burst.sh).
--
-- An order-taking service: a handful of hot products every other order
-- wants, many cold ones, customers with running totals.  One function,
-- demo.process_order, does the work of one order; both runs of the demo use
-- it: the direct run calls it in the client's transaction (through
-- demo.place_order), the buffered run's consumer calls it for each message
-- of a batch (through demo.handle_orders).
--
-- process_order locks the products of an order in id order, then its
-- customer, so two orders never deadlock; handle_orders locks a whole
-- batch's products, then its customers, the same way before it starts, so
-- two batches never deadlock either.  Deadlocks are still counted by the
-- demo, from pg_stat_database.
--
-- Run by a superuser on a fresh database with queue installed; psql
-- variables: products, hot_products, customers, stock.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

SELECT queue.unsubscribe('orders_consumer', if_exists => true);
SELECT queue.drop('orders', if_exists => true);
DROP SCHEMA IF EXISTS demo CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'demo') THEN
    CREATE ROLE demo LOGIN;
  END IF;
END $$;
GRANT EXECUTE ON FUNCTION queue.create TO demo;
CREATE SCHEMA demo AUTHORIZATION demo;
-- the front end's patience is the client's: a request it gave up on must
-- not be processed behind its back, so the server gives up too
ALTER ROLE demo SET statement_timeout = '30s';

SET ROLE demo;

CREATE TABLE demo.products (
  id         int PRIMARY KEY,
  price      numeric(10,2) NOT NULL,
  stock      bigint NOT NULL CHECK (stock >= 0),
  initial    bigint NOT NULL,
  hot        boolean NOT NULL
);
INSERT INTO demo.products
  SELECT i, 1 + (i % 97), :stock, :stock, i <= :hot_products
    FROM generate_series(1, :products) i;

CREATE TABLE demo.customers (
  id          int PRIMARY KEY,
  orders      bigint NOT NULL DEFAULT 0,
  total_spent numeric(14,2) NOT NULL DEFAULT 0,
  last_order  timestamptz
);
INSERT INTO demo.customers (id) SELECT generate_series(1, :customers);

CREATE TABLE demo.orders (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  request_id  bigint NOT NULL UNIQUE,
  customer_id int NOT NULL REFERENCES demo.customers,
  total       numeric(14,2) NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE demo.order_lines (
  order_id    bigint NOT NULL REFERENCES demo.orders,
  product_id  int NOT NULL,
  qty         int NOT NULL CHECK (qty > 0),
  price       numeric(10,2) NOT NULL,
  PRIMARY KEY (order_id, product_id)
);

-- One order: {"request_id": n, "customer_id": c, "lines": [{"product_id": p, "qty": q}, ...]}.
CREATE FUNCTION demo.process_order(request jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  v_order    bigint;
  v_total    numeric(14,2) := 0;
  v_price    numeric(10,2);
  v_line     record;
  v_products int[] := '{}';
  v_qtys     int[] := '{}';
  v_prices   numeric[] := '{}';
  v_hash     text := request::text;
BEGIN
  -- the fixed cost of the business rules (validation, fraud score, ...):
  -- about half a millisecond of CPU, before any lock is taken
  FOR i IN 1 .. 800 LOOP
    v_hash := md5(v_hash);
  END LOOP;
  -- products in id order: no deadlock between orders
  FOR v_line IN
    SELECT (l->>'product_id')::int AS product_id, (l->>'qty')::int AS qty
      FROM jsonb_array_elements(request->'lines') l
     ORDER BY 1
  LOOP
    UPDATE demo.products p SET stock = p.stock - v_line.qty
     WHERE p.id = v_line.product_id
     RETURNING p.price INTO v_price;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no product %', v_line.product_id;
    END IF;
    v_products := v_products || v_line.product_id;
    v_qtys := v_qtys || v_line.qty;
    v_prices := v_prices || v_price;
    v_total := v_total + v_price * v_line.qty;
  END LOOP;
  INSERT INTO demo.orders (request_id, customer_id, total)
    VALUES ((request->>'request_id')::bigint, (request->>'customer_id')::int, v_total)
    RETURNING id INTO v_order;
  INSERT INTO demo.order_lines
    SELECT v_order, p, q, pr FROM unnest(v_products, v_qtys, v_prices) u(p, q, pr);
  UPDATE demo.customers c
     SET orders = c.orders + 1, total_spent = c.total_spent + v_total,
         last_order = clock_timestamp()
   WHERE c.id = (request->>'customer_id')::int;
  RETURN v_order;
END $$;

-- The direct run's request: one order in the client's transaction, unless
-- the client gave up on it (deadline passed); lock waits end at the deadline.
CREATE FUNCTION demo.place_order(request jsonb, deadline timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  left_ms bigint := floor(extract(epoch FROM deadline - clock_timestamp()) * 1000);
BEGIN
  IF left_ms <= 0 THEN
    RAISE EXCEPTION 'request % expired before it was processed', request->>'request_id'
      USING ERRCODE = '57014';
  END IF;
  PERFORM set_config('lock_timeout', left_ms || 'ms', true);
  RETURN demo.process_order(request);
END $$;

-- The buffered run's consumer handler: the batch's products and customers
-- are locked once, in id order, then each order is processed.
CREATE FUNCTION demo.handle_orders(messages queue.message[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  m queue.message;
BEGIN
  PERFORM 1 FROM demo.products
   WHERE id IN (SELECT (l->>'product_id')::int
                  FROM unnest(messages) u, jsonb_array_elements(u.payload->'lines') l)
   ORDER BY id FOR NO KEY UPDATE;
  PERFORM 1 FROM demo.customers
   WHERE id IN (SELECT (u.payload->>'customer_id')::int FROM unnest(messages) u)
   ORDER BY id FOR NO KEY UPDATE;
  FOREACH m IN ARRAY messages LOOP
    PERFORM demo.process_order(m.payload);
  END LOOP;
END $$;

-- Statistics for the filled tables; orders and order_lines are left never
-- analysed, so that plans cached while they are empty (plpgsql's, the
-- foreign key checks') do not take them for empty for good.
ANALYZE demo.products, demo.customers;

SELECT queue.create('orders');
RESET ROLE;

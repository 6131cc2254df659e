-- One message per transaction through queue.send.
SELECT queue.send('bench', :payload::jsonb);

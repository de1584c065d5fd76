-- 041: the demo's local inbox.
--
-- `altaviz serve --demo` (or --inbox) accepts Apprise json:// posts at /inbox/receive/<mailbox>
-- and lists them at /inbox, so the demo shows delivered notifications with working links and
-- no external mail or SMS service. Not tenant data (it is the demo receiver's mailbox): the
-- server reads and writes it as the owner, and the application role gets no access at all.

CREATE TABLE demo_inbox (
    message_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox       text NOT NULL CHECK (length(mailbox) BETWEEN 1 AND 100),
    title         text NOT NULL DEFAULT '',
    body          text NOT NULL,
    notify_type   text,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX demo_inbox_received_idx ON demo_inbox (received_at DESC);

ALTER TABLE demo_inbox ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON demo_inbox FROM altaviz_app;

-- 040: single-use acknowledgement links.
--
-- Links are HMAC-signed and carry their own expiry, so the database never stores a token
-- (a leaked table cannot mint links); it records only that a token id was used. The primary
-- key is what makes a link single-use: two confirmations racing each other both try to
-- INSERT the same token_id and exactly one wins.
--
-- outcome: 'claimed' while the acknowledgement is being delivered to the alert workflow,
-- 'acknowledged' when the workflow's update accepted it, 'queued' when no worker answered and
-- the request went to the workflow as the durable signal ack_requested (it takes effect when a
-- worker returns), 'released' when the workflow refused it (the link may be tried again, e.g.
-- after a transient error). A claim left behind by a crashed server can be re-claimed after a
-- few minutes (see sql/queries/notify.sql: claim_link_token).

CREATE TABLE link_tokens_used (
    token_id      text PRIMARY KEY CHECK (length(token_id) BETWEEN 8 AND 64),
    org_id        text NOT NULL REFERENCES organizations (org_id),
    alert_id      text NOT NULL REFERENCES alert_history (alert_id),
    contact_id    text NOT NULL,
    action        text NOT NULL CHECK (action IN ('ack', 'view')),
    outcome       text NOT NULL CHECK (outcome IN ('claimed', 'acknowledged', 'queued', 'released')),
    used_at       timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    detail        text,
    FOREIGN KEY (org_id, contact_id) REFERENCES contacts (org_id, contact_id)
);
CREATE INDEX link_tokens_used_alert_idx ON link_tokens_used (alert_id, used_at);

ALTER TABLE link_tokens_used ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON link_tokens_used TO altaviz_app
    USING (org_id = current_org()) WITH CHECK (org_id = current_org());
-- No DELETE: a used token stays used; a refused one is marked 'released' instead.
GRANT SELECT, INSERT, UPDATE ON link_tokens_used TO altaviz_app;

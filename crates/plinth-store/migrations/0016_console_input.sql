-- Console input: text typed for an instance's serial console, waiting for the agent of the
-- host the instance was on (`host_id`) to write it to the guest. `seq` orders one
-- instance's input, taken from the instance's `console_input_seq` (so it never repeats
-- once earlier rows are gone); the agent acknowledges what it wrote and those rows go.
-- `bytes` bounds what may wait per instance.
CREATE TABLE console_input (
    instance_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    host_id TEXT NOT NULL,
    data TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
CREATE INDEX console_input_host ON console_input (host_id, instance_id, seq);
ALTER TABLE instances ADD COLUMN console_input_seq BIGINT NOT NULL DEFAULT 0;

-- Serial console logs as shipped by agents: the last 1 MiB of each instance's console.
-- `stream`/`acked` are the agent's side (which log file, how far received); `base` is the
-- offset users see of `data`'s first byte (bytes trimmed from the front move it on).
CREATE TABLE console_logs (
    instance_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    acked BIGINT NOT NULL,
    base BIGINT NOT NULL,
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

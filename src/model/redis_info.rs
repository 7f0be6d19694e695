//! What a tenant's Redis says of itself in its `INFO` answer, read purely: the operator's metrics
//! of each tenant's Redis (`crate::controller::operand` asks, `crate::metrics` exposes).

/// What the metrics take from `INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisInfo {
    pub used_memory: i64,
    /// `maxmemory`: what Redis may use before it evicts (0: no limit).
    pub maxmemory: i64,
    pub keys: i64,
    pub evicted_keys: i64,
    pub connected_clients: i64,
    /// The last background save and the last append-only file write both succeeded.
    pub persistence_ok: bool,
}

impl RedisInfo {
    /// Reads the fields of an `INFO` answer (`key:value` lines in sections); a field missing is 0,
    /// and persistence is ok unless a status says otherwise.
    pub fn parse(info: &str) -> Self {
        let mut parsed = RedisInfo { persistence_ok: true, ..RedisInfo::default() };
        for line in info.lines() {
            let Some((key, value)) = line.trim_end().split_once(':') else { continue };
            let number = || value.parse::<i64>().unwrap_or(0);
            match key {
                "used_memory" => parsed.used_memory = number(),
                "maxmemory" => parsed.maxmemory = number(),
                "evicted_keys" => parsed.evicted_keys = number(),
                "connected_clients" => parsed.connected_clients = number(),
                "rdb_last_bgsave_status" | "aof_last_write_status" if value != "ok" => parsed.persistence_ok = false,
                // `db0:keys=12,expires=0,avg_ttl=0`
                database if database.starts_with("db") => {
                    let keys = value.split(',').find_map(|field| field.strip_prefix("keys="));
                    parsed.keys += keys.and_then(|keys| keys.parse::<i64>().ok()).unwrap_or(0);
                }
                _ => {}
            }
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_memory_keys_evictions_clients_and_persistence() {
        let info = "# Server\r\nredis_version:7.0.15\r\n# Clients\r\nconnected_clients:3\r\n# Memory\r\n\
                    used_memory:1048576\r\nmaxmemory:104857600\r\n# Persistence\r\nrdb_last_bgsave_status:ok\r\n\
                    aof_last_write_status:ok\r\n# Stats\r\nevicted_keys:7\r\n# Keyspace\r\n\
                    db0:keys=12,expires=0,avg_ttl=0\r\ndb1:keys=3,expires=1,avg_ttl=5\r\n";
        let parsed = RedisInfo::parse(info);
        assert_eq!(
            parsed,
            RedisInfo {
                used_memory: 1_048_576,
                maxmemory: 104_857_600,
                keys: 15,
                evicted_keys: 7,
                connected_clients: 3,
                persistence_ok: true
            }
        );
        let failing = RedisInfo::parse("rdb_last_bgsave_status:ok\r\naof_last_write_status:err\r\n");
        assert!(!failing.persistence_ok);
        // Nothing readable: zeros, never a panic.
        assert_eq!(
            RedisInfo::parse("garbage\r\nused_memory:lots\r\ndb0:keys=x"),
            RedisInfo { persistence_ok: true, ..RedisInfo::default() }
        );
    }
}

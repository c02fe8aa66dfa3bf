//! Tenants: the key every request carries, and what the pool counts per
//! tenant.
//!
//! A page server serves many tenants from one pool, and a tenant that can
//! write crafted WAL attacks the process that replays it. So a wal-redo
//! process is started for one key and only ever sees requests of that key
//! (`slots` binds a slot to a key while it has a process; `execute` refuses
//! a job of another key), and the queue serves tenants in turn (`queue`).
//! The unkeyed calls are the default tenant, the empty key.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::pool::stats::TenantCounters;

/// The longest key, in bytes (the C ABI's `WALREDO_MAX_KEY_LEN`).
pub const MAX_KEY_LEN: usize = 64;

/// A tenant's key: up to [`MAX_KEY_LEN`] bytes, held in place (no
/// allocation per request). The bytes past `len` are always zero, so the
/// derived equality is the keys' equality.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TenantKey {
    len: u8,
    bytes: [u8; MAX_KEY_LEN],
}

impl TenantKey {
    /// The default tenant's: the unkeyed calls'.
    pub const DEFAULT: TenantKey = TenantKey {
        len: 0,
        bytes: [0; MAX_KEY_LEN],
    };

    pub fn new(key: &[u8]) -> Result<TenantKey> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidArgument(format!(
                "a tenant key has at most {MAX_KEY_LEN} bytes, not {}",
                key.len()
            )));
        }
        let mut bytes = [0; MAX_KEY_LEN];
        bytes[..key.len()].copy_from_slice(key);
        Ok(TenantKey {
            len: key.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_default(&self) -> bool {
        self.len == 0
    }
}

impl std::hash::Hash for TenantKey {
    /// Only the key's own bytes (a short key hashes fast).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
    }
}

impl fmt::Display for TenantKey {
    /// `default` for the empty key, the key itself when it is made of
    /// letters, digits and `-_.:`, else `0x` and its bytes in hex: safe in
    /// a log line and in a Prometheus label value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.as_bytes();
        if key.is_empty() {
            return f.write_str("default");
        }
        if key
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        {
            // Checked: ASCII.
            return f.write_str(std::str::from_utf8(key).unwrap_or_default());
        }
        f.write_str("0x")?;
        key.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantKey({self})")
    }
}

/// Tenants counted one by one, at most this many; the rest are added up
/// as one, `other` (the least busy one goes there when a new one comes).
const TENANTS_COUNTED: usize = 4096;

/// Tenants with a label of their own in the Prometheus text; the rest are
/// `tenant="other"`.
pub const TENANTS_LABELLED: usize = 10;

/// Per-tenant counters, bounded ([`TENANTS_COUNTED`]).
#[derive(Default)]
pub struct TenantStats {
    inner: Mutex<Counted>,
}

#[derive(Default)]
struct Counted {
    tenants: HashMap<TenantKey, TenantCounters>,
    other: TenantCounters,
}

fn add(into: &mut TenantCounters, c: &TenantCounters) {
    into.requests += c.requests;
    into.failures += c.failures;
    into.spawns += c.spawns;
    into.wait_us += c.wait_us;
}

impl TenantStats {
    fn with(&self, key: &TenantKey, f: impl FnOnce(&mut TenantCounters)) {
        let mut counted = self.inner.lock();
        let counted = &mut *counted;
        if !counted.tenants.contains_key(key) && counted.tenants.len() >= TENANTS_COUNTED {
            let least = counted
                .tenants
                .iter()
                .min_by_key(|(_, c)| c.requests)
                .map(|(k, _)| *k)
                .expect("the map is full");
            let c = counted.tenants.remove(&least).expect("just found");
            add(&mut counted.other, &c);
        }
        f(counted.tenants.entry(*key).or_default());
    }

    /// A request of `key` answered, `ok` or not, after waiting `waited`
    /// for a process.
    pub fn answered(&self, key: &TenantKey, ok: bool, waited: Duration) {
        self.with(key, |c| {
            c.requests += 1;
            c.failures += u64::from(!ok);
            c.wait_us += waited.as_micros().min(u64::MAX as u128) as u64;
        });
    }

    /// A process started for `key`.
    pub fn spawned(&self, key: &TenantKey) {
        self.with(key, |c| c.spawns += 1);
    }

    /// The counters of `key` (zeros for one never seen, or one now counted
    /// in `other`).
    pub fn get(&self, key: &TenantKey) -> TenantCounters {
        self.inner
            .lock()
            .tenants
            .get(key)
            .copied()
            .unwrap_or_default()
    }

    /// The busiest [`TENANTS_LABELLED`] tenants by requests, and the rest
    /// added up.
    pub fn top(&self) -> (Vec<(TenantKey, TenantCounters)>, TenantCounters) {
        let counted = self.inner.lock();
        let mut all: Vec<(TenantKey, TenantCounters)> =
            counted.tenants.iter().map(|(k, c)| (*k, *c)).collect();
        all.sort_by_key(|(k, c)| (std::cmp::Reverse(c.requests), k.as_bytes().to_vec()));
        let mut other = counted.other;
        for (_, c) in all.iter().skip(TENANTS_LABELLED) {
            add(&mut other, c);
        }
        all.truncate(TENANTS_LABELLED);
        (all, other)
    }

    /// The per-tenant families of the Prometheus text.
    pub fn prometheus_text(&self, out: &mut String) {
        let (top, other) = self.top();
        type Family = (&'static str, &'static str, fn(&TenantCounters) -> f64);
        let families: [Family; 4] = [
            (
                "walredo_tenant_requests_total",
                "Requests answered, per tenant (the busiest; the rest are tenant=\"other\").",
                |c| c.requests as f64,
            ),
            (
                "walredo_tenant_failures_total",
                "Requests answered with an error, per tenant.",
                |c| c.failures as f64,
            ),
            (
                "walredo_tenant_spawns_total",
                "Processes started, per tenant.",
                |c| c.spawns as f64,
            ),
            (
                "walredo_tenant_wait_seconds_total",
                "Time requests waited for a process, per tenant.",
                |c| c.wait_us as f64 / 1e6,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (key, c) in &top {
                let _ = writeln!(out, "{name}{{tenant=\"{key}\"}} {}", value(c));
            }
            if other != TenantCounters::default() {
                let _ = writeln!(out, "{name}{{tenant=\"other\"}} {}", value(&other));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_shown_safely() {
        assert!(TenantKey::new(&[7; MAX_KEY_LEN]).is_ok());
        assert!(matches!(
            TenantKey::new(&[7; MAX_KEY_LEN + 1]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(TenantKey::DEFAULT.to_string(), "default");
        assert_eq!(TenantKey::new(b"").unwrap(), TenantKey::DEFAULT);
        assert_eq!(TenantKey::new(b"db-16384").unwrap().to_string(), "db-16384");
        assert_eq!(TenantKey::new(b"a\"b").unwrap().to_string(), "0x612262");
        assert_ne!(
            TenantKey::new(b"a").unwrap(),
            TenantKey::new(b"a\0").unwrap()
        );
    }

    #[test]
    fn the_busiest_have_labels_and_the_rest_are_other() {
        let stats = TenantStats::default();
        for t in 0..(TENANTS_LABELLED as u8 + 3) {
            let key = TenantKey::new(&[b'a' + t]).unwrap();
            for _ in 0..=t {
                stats.answered(&key, t != 0, Duration::from_micros(5));
            }
        }
        stats.spawned(&TenantKey::new(b"a").unwrap());
        let (top, other) = stats.top();
        assert_eq!(top.len(), TENANTS_LABELLED);
        assert_eq!(top[0].0.as_bytes(), [b'a' + TENANTS_LABELLED as u8 + 2]);
        // a (1 request, failed, 1 spawn), b (2) and c (3) are the least busy.
        assert_eq!(
            other,
            TenantCounters {
                requests: 6,
                failures: 1,
                spawns: 1,
                wait_us: 30
            }
        );
        let mut text = String::new();
        stats.prometheus_text(&mut text);
        assert!(text.contains("walredo_tenant_requests_total{tenant=\"other\"} 6\n"));
        assert!(text.contains("walredo_tenant_requests_total{tenant=\"m\"} 13\n"));
        assert!(text.contains("walredo_tenant_wait_seconds_total{tenant=\"m\"} 0.000065\n"));
    }

    #[test]
    fn counting_is_bounded() {
        let stats = TenantStats::default();
        for t in 0..(TENANTS_COUNTED as u32 + 5) {
            stats.answered(
                &TenantKey::new(&t.to_le_bytes()).unwrap(),
                true,
                Duration::ZERO,
            );
        }
        let counted = stats.inner.lock();
        assert_eq!(counted.tenants.len(), TENANTS_COUNTED);
        assert_eq!(counted.other.requests, 5);
    }
}

//! The atomic operations (issue 10) on the meta protocol, one round trip
//! each where the protocol allows:
//!
//! - `add`: `ms <key> <len> T<exptime> ME` (mode E: add), `HD` stored, `NS` not;
//! - `touch`: `mg <key> T<exptime>`, `HD` / `EN`; `persist`: `T0`;
//! - `ttl`: `mg <key> t`; `get_with_ttl`: `mg <key> v t` (`t`: remaining
//!   seconds, -1 for never); many keys: quiet `mg <key> v t q O<i>` lines
//!   closed by `mn`, one pipelined write per server;
//! - `incr`: the value read and checked, then `ma` or `ms` under its CAS
//!   token (see [`MemcachedCache::incr_one`]);
//! - `compare_and_set`: `mg <key> v c`, then `ms ... C<cas>`.

use bytes::Bytes;

use super::*;
use crate::cache::{ValueTtl, parse_counter};

/// Longest pause between two compare-and-set attempts.
const CAS_BACKOFF_MAX_MS: u64 = 8;

/// The remaining TTL a meta `t` flag gives: -1 (or absent) is "never".
fn ttl_of(t: Option<i64>) -> Option<Duration> {
    match t {
        Some(t) if t >= 0 => Some(Duration::from_secs(t as u64)),
        _ => None,
    }
}

/// ` T<exptime>` for an expiry, empty for "never".
fn ttl_flag(exp: Option<u64>) -> String {
    exp.map(|e| format!(" T{e}")).unwrap_or_default()
}

fn not_integer(key: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "incr: the stored value is not a decimal integer within i64",
    )
    .with_backend(BACKEND)
    .with_context("key", key)
}

fn overflow(key: &str, delta: i64) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("incr by {delta} overflows i64"),
    )
    .with_backend(BACKEND)
    .with_context("key", key)
}

impl MemcachedCache {
    /// The key's memcached form and its server, under the current version.
    async fn locate(&self, key: &str) -> Result<(String, &Server)> {
        let version = self.version().await?;
        let k = self.server_key(&version, key);
        let s = &self.servers[self.server_of(k.as_bytes())];
        Ok((k, s))
    }

    /// One request answered by one reply.
    async fn ask_one(&self, s: &Server, req: impl Into<Bytes>) -> Result<Reply> {
        let mut replies = self.call(s, req, None, 1).await?;
        replies
            .pop()
            .ok_or_else(|| proto_err(&s.addr, "no reply".into()))
    }

    /// [`Cache::add`]: `ms ... ME`.
    pub(super) async fn add_one(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let exp = self.exptime(ttl)?;
        let (k, s) = self.locate(key).await?;
        let (mut failures, _) = self.split_oversized(&[(key, value)], std::slice::from_ref(&k));
        if let Some((_, e)) = failures.pop() {
            return Err(e);
        }
        let mut req = format!("ms {k} {}{} ME\r\n", value.len(), ttl_flag(exp)).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        let r = self.ask_one(s, req).await?;
        match r.code.as_ref() {
            "HD" => {
                self.counters.set(1);
                Ok(true)
            }
            "NS" => Ok(false),
            _ => Err(unexpected(&s.addr, &r).with_context("key", key)),
        }
    }

    /// [`Cache::touch`]: `mg <key> T<exptime>` (`T0`: never expires).
    pub(super) async fn touch_one(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let exp = self.exptime(ttl)?;
        self.expire_one(key, exp).await
    }

    /// `mg <key> T<exp>` with the exptime computed (`None`: `T0`, never):
    /// `touch`, and `persist`.
    pub(super) async fn expire_one(&self, key: &str, exp: Option<u64>) -> Result<bool> {
        let (k, s) = self.locate(key).await?;
        let req = format!("mg {k} T{}\r\n", exp.unwrap_or(0));
        let r = self.ask_one(s, req).await?;
        match r.code.as_ref() {
            "HD" => Ok(true),
            "EN" => Ok(false),
            _ => Err(unexpected(&s.addr, &r).with_context("key", key)),
        }
    }

    /// [`Cache::ttl`]: `mg <key> t`.
    pub(super) async fn ttl_one(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let (k, s) = self.locate(key).await?;
        let req = format!("mg {k} t\r\n");
        let r = self.ask_one(s, req).await?;
        match r.code.as_ref() {
            "HD" => Ok(Some(ttl_of(r.ttl))),
            "EN" => Ok(None),
            _ => Err(unexpected(&s.addr, &r).with_context("key", key)),
        }
    }

    /// [`Cache::get_with_ttl`]: `mg <key> v t`. As for `get`, an
    /// unreachable server is a miss counted as an error.
    pub(super) async fn get_ttl_one(&self, key: &str) -> Result<Option<ValueTtl>> {
        let Some(version) = self.read_version(1).await? else {
            return Ok(None);
        };
        let k = self.server_key(&version, key);
        let s = &self.servers[self.server_of(k.as_bytes())];
        let req = format!("mg {k} v t\r\n");
        let out = match self.ask_one(s, req).await {
            Err(e) => {
                self.read_failures(vec![(vec![0], e)])?;
                None
            }
            Ok(mut r) => match (r.code.as_ref(), r.value.take()) {
                ("VA", Some(v)) => Some(ValueTtl::new(Bytes::from(v), ttl_of(r.ttl))),
                ("EN", _) => None,
                _ => {
                    self.counters.error();
                    return Err(unexpected(&s.addr, &r).with_context("key", key));
                }
            },
        };
        self.counters.read(std::slice::from_ref(&out));
        Ok(out)
    }

    /// [`Cache::get_many_with_ttl`]: quiet
    /// `mg <key> v t q O<i>` per key then `mn`, per server. As for `get`,
    /// an unreachable server's keys are misses counted as errors.
    pub(super) async fn get_ttl_all(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let Some(version) = self.read_version(keys.len()).await? else {
            return Ok(vec![None; keys.len()]);
        };
        let full: Vec<String> = keys.iter().map(|k| self.server_key(&version, k)).collect();
        let out: StdMutex<Vec<Option<ValueTtl>>> = StdMutex::new(vec![None; keys.len()]);
        let failed = self
            .fan_out(
                &full,
                |chunk| {
                    let mut req = Vec::with_capacity(chunk.len() * 48);
                    for (o, &i) in chunk.iter().enumerate() {
                        req.extend_from_slice(b"mg ");
                        req.extend_from_slice(full[i].as_bytes());
                        req.extend_from_slice(b" v t q O");
                        push_num(&mut req, o as u64);
                        req.extend_from_slice(b"\r\n");
                    }
                    req.extend_from_slice(b"mn\r\n");
                    (req, Some("MN"), 0)
                },
                |addr, chunk, replies| {
                    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                    for mut r in replies {
                        match (r.code.as_ref(), r.opaque, r.value.take()) {
                            ("MN", _, _) => {}
                            ("VA", Some(o), Some(v)) if o < chunk.len() => {
                                out[chunk[o]] = Some(ValueTtl::new(Bytes::from(v), ttl_of(r.ttl)));
                            }
                            _ => return Err(unexpected(addr, &r)),
                        }
                    }
                    Ok(())
                },
            )
            .await;
        self.read_failures(failed)?;
        let out = out.into_inner().unwrap_or_else(|p| p.into_inner());
        self.counters.read(&out);
        Ok(out)
    }

    /// [`Cache::incr`]: read, check, write back under the item's CAS token,
    /// again while another writer wins (up to the response timeout).
    ///
    /// memcached's own `ma` parses a value with `strtoull`, which takes
    /// `+5`, `007`, ` 5` and `5\n`, and floors decrements at 0; so the value
    /// is read first (`mg <key> v c t`) and checked with the one grammar
    /// every backend uses ([`parse_counter`]: Redis's), and only then
    /// written: `ma <key> C<cas> MI D<delta> v` for a non-negative delta on a
    /// non-negative counter (memcached's arithmetic, exact there, keeps the
    /// TTL to the second it had), else `ms <key> <len> T<remaining> C<cas>`
    /// with the new text; a missing key is `ms <key> <len> T<default> ME`.
    /// `EX`/`NS`/`NF` (another writer between read and write): again.
    pub(super) async fn incr_one(&self, key: &str, delta: i64) -> Result<i64> {
        let exp = self.exptime(None)?;
        let (k, s) = self.locate(key).await?;
        let read = format!("mg {k} v c t\r\n");
        self.cas_loop(key, "incr", || {
            let (read, k) = (&read, &k);
            async move {
                let r = self.ask_one(s, read.clone()).await?;
                let (new, req) = match (r.code.as_ref(), r.value.as_deref(), r.cas) {
                    ("EN", _, _) => {
                        let text = delta.to_string();
                        let req = format!("ms {k} {}{} ME\r\n{text}\r\n", text.len(), ttl_flag(exp));
                        (delta, req)
                    }
                    ("VA", Some(v), Some(cas)) => {
                        let old = parse_counter(v).ok_or_else(|| not_integer(key))?;
                        let new = old.checked_add(delta).ok_or_else(|| overflow(key, delta))?;
                        let req = if old >= 0 && delta >= 0 {
                            format!("ma {k} C{cas} MI D{delta} v\r\n")
                        } else {
                            // Keep the TTL: re-send what remains (at least 1 s, as set does).
                            let remaining = ttl_of(r.ttl).map(|t| exptime(t, now_unix()));
                            let text = new.to_string();
                            format!("ms {k} {}{} C{cas}\r\n{text}\r\n", text.len(), ttl_flag(remaining))
                        };
                        (new, req)
                    }
                    _ => return Err(unexpected(&s.addr, &r).with_context("key", key)),
                };
                let w = self.ask_one(s, req).await?;
                match w.code.as_ref() {
                    "HD" | "VA" => {
                        self.counters.set(1);
                        Ok(Some(new))
                    }
                    // Another writer got there first (or the key went): again.
                    "EX" | "NS" | "NF" => Ok(None),
                    _ => Err(unexpected(&s.addr, &w).with_context("key", key)),
                }
            }
        })
        .await
    }

    /// [`Cache::compare_and_set`]: `mg <key> v c`, the bytes compared here,
    /// then `ms <key> <len> T<exp> C<cas>`. `EX`/`NF` (written or deleted
    /// between): read again, so a rewrite of the same bytes does not fail it.
    pub(super) async fn compare_and_set_one(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let exp = self.exptime(ttl)?;
        let (k, s) = self.locate(key).await?;
        let (mut failures, _) = self.split_oversized(&[(key, new)], std::slice::from_ref(&k));
        if let Some((_, e)) = failures.pop() {
            return Err(e);
        }
        let read = format!("mg {k} v c\r\n");
        self.cas_loop(key, "compare_and_set", || {
            let (read, k) = (&read, &k);
            async move {
                let r = self.ask_one(s, read.clone()).await?;
                let cas = match (r.code.as_ref(), r.value.as_deref(), r.cas) {
                    ("EN", _, _) => return Ok(Some(false)),
                    ("VA", Some(v), Some(cas)) if v == expected => cas,
                    ("VA", Some(_), Some(_)) => return Ok(Some(false)),
                    _ => return Err(unexpected(&s.addr, &r).with_context("key", key)),
                };
                let mut req = format!("ms {k} {}{} C{cas}\r\n", new.len(), ttl_flag(exp)).into_bytes();
                req.extend_from_slice(new);
                req.extend_from_slice(b"\r\n");
                let w = self.ask_one(s, req).await?;
                match w.code.as_ref() {
                    "HD" => {
                        self.counters.set(1);
                        Ok(Some(true))
                    }
                    "EX" | "NF" | "NS" => Ok(None),
                    _ => Err(unexpected(&s.addr, &w).with_context("key", key)),
                }
            }
        })
        .await
    }

    /// Runs `step` until it gives an answer (`Some`), with a short jittered
    /// pause from the third attempt, for up to the response timeout (then a
    /// `Timeout` error naming `op`).
    async fn cas_loop<T, F, Fut>(&self, key: &str, op: &str, mut step: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let started = Instant::now();
        for attempt in 0u64.. {
            if let Some(v) = step().await? {
                return Ok(v);
            }
            if started.elapsed() >= self.timeouts.response {
                break;
            }
            if attempt >= 2 {
                let jitter = xxhash_rust::xxh3::xxh3_64(&now_unix_nanos().to_le_bytes());
                let ms = jitter % CAS_BACKOFF_MAX_MS.min(attempt) + 1;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "{op} lost every compare-and-set to other writers for {:?}",
                self.timeouts.response
            ),
        )
        .with_backend(BACKEND)
        .with_context("key", key))
    }
}

/// Nanoseconds of the wall clock, to jitter retries.
fn now_unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_ttl_flags() {
        assert_eq!(ttl_of(Some(-1)), None);
        assert_eq!(ttl_of(None), None);
        assert_eq!(ttl_of(Some(5)), Some(Duration::from_secs(5)));
        assert_eq!(ttl_flag(None), "");
        assert_eq!(ttl_flag(Some(60)), " T60");
    }
}

//! The atomic operations (issue 10) on the meta protocol, one round trip
//! each where the protocol allows:
//!
//! - `add`: `ms <key> <len> T<exptime> ME` (mode E: add), `HD` stored, `NS` not;
//! - `touch`: `mg <key> T<exptime>`, `HD` / `EN`;
//! - `ttl`: `mg <key> t`; `get_with_ttl`: `mg <key> v t` (`t`: remaining
//!   seconds, -1 for never); many keys: quiet `mg <key> v t q O<i>` lines
//!   closed by `mn`, one pipelined write per server;
//! - `incr`: `ma` where memcached's unsigned arithmetic gives the exact
//!   result, else a compare-and-set loop (see [`MemcachedCache::incr_one`]).

use super::*;
use crate::cache::ValueTtl;

/// Longest pause between two compare-and-set attempts of `incr`.
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

/// A stored value as `incr` reads it: decimal `i64` text (memcached's own
/// in-place decrement pads a shorter number with spaces: allowed).
fn parse_counter(v: &[u8]) -> Option<i64> {
    let end = v.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    std::str::from_utf8(&v[..end]).ok()?.parse().ok()
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
    async fn ask_one(&self, s: &Server, req: &[u8]) -> Result<Reply> {
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
        let r = self.ask_one(s, &req).await?;
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
        let (k, s) = self.locate(key).await?;
        let req = format!("mg {k} T{}\r\n", exp.unwrap_or(0));
        let r = self.ask_one(s, req.as_bytes()).await?;
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
        let r = self.ask_one(s, req.as_bytes()).await?;
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
        let out = match self.ask_one(s, req.as_bytes()).await {
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

    /// [`Cache::incr`]. memcached's `ma` works on unsigned 64-bit decimal
    /// text and floors decrements at 0, so it is used only where it is exact:
    /// a non-negative delta on a non-negative counter (`ma <key> N<exptime>
    /// J<delta> D<delta> MI v`: a missing key is created at `delta` with the
    /// default TTL; an existing one keeps its TTL). A result past `i64::MAX`
    /// (or a 64-bit wrap) is undone at once by a second `ma` adding
    /// 2^64 - delta, and is an error. Negative deltas, and counters below
    /// zero (which `ma` calls non-numeric), take a compare-and-set loop.
    pub(super) async fn incr_one(&self, key: &str, delta: i64) -> Result<i64> {
        let exp = self.exptime(None)?;
        let (k, s) = self.locate(key).await?;
        if let Ok(d) = u64::try_from(delta)
            && let Some(n) = self.incr_native(s, &k, key, d, exp).await?
        {
            return Ok(n);
        }
        self.incr_cas(s, &k, key, delta, exp).await
    }

    /// `ma` for a non-negative delta: `None` when the stored value is not
    /// an unsigned number (negative, or not a number: the CAS path decides).
    async fn incr_native(
        &self,
        s: &Server,
        k: &str,
        key: &str,
        d: u64,
        exp: Option<u64>,
    ) -> Result<Option<i64>> {
        let req = format!("ma {k} N{} J{d} D{d} MI v\r\n", exp.unwrap_or(0));
        let r = self.ask_one(s, req.as_bytes()).await?;
        match r.code.as_ref() {
            "VA" => {}
            "CLIENT_ERROR" if r.line.contains("non-numeric") => return Ok(None),
            _ => return Err(unexpected(&s.addr, &r).with_context("key", key)),
        }
        let n = r
            .value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim_end().parse::<u64>().ok())
            .ok_or_else(|| unexpected(&s.addr, &r).with_context("key", key))?;
        // The result is below the delta only when the unsigned sum wrapped.
        let wrapped = n < d;
        if let (false, Ok(n)) = (wrapped, i64::try_from(n)) {
            return Ok(Some(n));
        }
        if d > 0 {
            // memcached's incr wraps modulo 2^64: adding 2^64 - d undoes it.
            let undo = format!("ma {k} MI D{}\r\n", d.wrapping_neg());
            let r = self.ask_one(s, undo.as_bytes()).await?;
            if !matches!(r.code.as_ref(), "HD" | "NF") {
                return Err(unexpected(&s.addr, &r).with_context("key", key));
            }
        }
        if !wrapped && n - d <= i64::MAX as u64 {
            Err(overflow(key, d as i64))
        } else {
            Err(not_integer(key))
        }
    }

    /// The compare-and-set loop: `mg <key> v c t`, then `ms <key> ... C<cas>
    /// T<remaining>` (or `ms ... ME` for a missing key), again on `EX`/`NS`/
    /// `NF` until the response timeout has passed.
    async fn incr_cas(
        &self,
        s: &Server,
        k: &str,
        key: &str,
        delta: i64,
        exp: Option<u64>,
    ) -> Result<i64> {
        let started = Instant::now();
        let read = format!("mg {k} v c t\r\n");
        for attempt in 0u64.. {
            let r = self.ask_one(s, read.as_bytes()).await?;
            let (new, mode) = match (r.code.as_ref(), r.value.as_deref(), r.cas) {
                ("EN", _, _) => (delta, format!("{} ME", ttl_flag(exp))),
                ("VA", Some(v), Some(cas)) => {
                    let old = parse_counter(v).ok_or_else(|| not_integer(key))?;
                    let new = old.checked_add(delta).ok_or_else(|| overflow(key, delta))?;
                    // Keep the TTL: re-send what remains (at least 1 s, as set does).
                    let remaining = ttl_of(r.ttl).map(|t| exptime(t, now_unix()));
                    (new, format!("{} C{cas}", ttl_flag(remaining)))
                }
                _ => return Err(unexpected(&s.addr, &r).with_context("key", key)),
            };
            let text = new.to_string();
            let req = format!("ms {k} {}{mode}\r\n{text}\r\n", text.len());
            let w = self.ask_one(s, req.as_bytes()).await?;
            match w.code.as_ref() {
                "HD" => {
                    self.counters.set(1);
                    return Ok(new);
                }
                // Another writer got there first (or the key went): again.
                "EX" | "NS" | "NF" => {}
                _ => return Err(unexpected(&s.addr, &w).with_context("key", key)),
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
                "incr lost every compare-and-set to other writers for {:?}",
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
    fn counters_parse_as_signed_decimal_with_memcached_padding() {
        assert_eq!(parse_counter(b"42"), Some(42));
        assert_eq!(parse_counter(b"-8"), Some(-8));
        assert_eq!(parse_counter(b"9  "), Some(9));
        assert_eq!(parse_counter(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b""[..], b" ", b"x", b"1.5", b"9223372036854775808", b" 1"] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn meta_ttl_flags() {
        assert_eq!(ttl_of(Some(-1)), None);
        assert_eq!(ttl_of(None), None);
        assert_eq!(ttl_of(Some(5)), Some(Duration::from_secs(5)));
        assert_eq!(ttl_flag(None), "");
        assert_eq!(ttl_flag(Some(60)), " T60");
    }
}

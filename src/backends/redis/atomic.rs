//! Atomic operations (issue 10): `add` as `SET NX PX`, `touch` as `PEXPIRE`
//! (or a script doing `EXISTS` + `PERSIST`), `incr`, `compare_and_set` and
//! `get_with_ttl` as Lua scripts (a single `get_with_ttl` on a plain server is `GET` + `PTTL`
//! pipelined on the direct connection instead). One command per key, so
//! they route by slot in a cluster like every other single-key command;
//! scripts go as `EVALSHA`, and only a node that answers `NOSCRIPT` (first
//! use, restart, `SCRIPT FLUSH`) gets `EVAL` with the text, which also
//! loads it there.

use super::*;
use crate::cache::ValueTtl;

/// A Lua script: its text and the SHA-1 of the text, as `EVALSHA` wants it.
pub(super) struct Script {
    text: &'static str,
    sha: &'static str,
    /// Whether it may run twice (see `cluster::Batch::resend`).
    resend: bool,
    /// Whether it only reads (`read_from` may send it to a cluster replica,
    /// where a script without writes runs).
    read: bool,
}

/// `INCRBY`, and `PEXPIRE` with the default TTL (`ARGV[2]`, when given) only
/// when the key did not exist. Returns the counter with `GET`: Lua numbers
/// are doubles, which would round results beyond 2^53.
pub(super) const INCR: Script = Script {
    text: "local e = redis.call('EXISTS', KEYS[1]) redis.call('INCRBY', KEYS[1], ARGV[1]) \
           if e == 0 and ARGV[2] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
           return redis.call('GET', KEYS[1])",
    sha: "7a66dc72533b3d8cd0692782e342180840233576",
    resend: false,
    read: false,
};

/// `compare_and_set`: `SET` (`PX ARGV[3]` when given; without, the key
/// loses any TTL, as with `set`) only when `GET` is exactly `ARGV[1]`.
/// 1 stored, 0 not. A missing key's `GET` is `false`, never equal. Not
/// resent: a first run that landed would make a second answer 0.
pub(super) const COMPARE_AND_SET: Script = Script {
    text: "local v = redis.call('GET', KEYS[1]) if v ~= ARGV[1] then return 0 end \
           if ARGV[3] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
           else redis.call('SET', KEYS[1], ARGV[2]) end return 1",
    sha: "c00bd352221d87c2c3c0fb174f2b86371ead2356",
    resend: false,
    read: false,
};

/// The value and its `PTTL`, read at one instant (a script sees no key
/// expire while it runs); nil when absent.
pub(super) const GET_TTL: Script = Script {
    text: "local v = redis.call('GET', KEYS[1]) if not v then return false end \
           return {v, redis.call('PTTL', KEYS[1])}",
    sha: "5100af3c92cf05a4150de40c1751210ef8ae0722",
    resend: true,
    read: true,
};

/// `PERSIST` that tells a missing key (0) from one that had no TTL (1):
/// `PERSIST` alone answers 0 for both.
pub(super) const PERSIST: Script = Script {
    text: "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
           redis.call('PERSIST', KEYS[1]) return 1",
    sha: "c518d6704211cd0ed52fec343baaae8acc33f462",
    resend: true,
    read: false,
};

/// Builds the command of entry `i`.
type PerKey<'a> = &'a (dyn Fn(usize) -> Cmd + Sync);

/// A server's error reply as an error ("CODE details"), as the cluster
/// router reports it too.
fn server_error(e: &redis::ServerError) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!("{} {}", e.code(), e.details().unwrap_or("")),
    )
    .with_backend(BACKEND)
}

/// Whether `e` is the server's error reply with code `code`.
fn is_reply(e: &Error, code: &str) -> bool {
    e.kind() == ErrorKind::Backend
        && e.message()
            .split_once(' ')
            .map_or(e.message(), |(c, _)| c)
            .eq(code)
}

/// What `incr` makes of the server's refusal; other errors pass unchanged.
fn incr_error(e: Error, key: &str, delta: i64) -> Error {
    let msg = e.message();
    let text = if msg.contains("not an integer") || is_reply(&e, "WRONGTYPE") {
        "the value is not a decimal integer (i64)".to_string()
    } else if msg.contains("overflow") {
        format!("adding {delta} would overflow an i64")
    } else {
        return e.with_context("key", key);
    };
    Error::new(ErrorKind::InvalidInput, text)
        .with_backend(BACKEND)
        .with_context("key", key)
}

/// A `GET_TTL` reply.
fn value_ttl(v: Value) -> Result<Option<ValueTtl>> {
    let mut parts = match v {
        Value::Nil => return Ok(None),
        Value::Array(parts) if parts.len() == 2 => parts.into_iter(),
        _ => return Err(Error::new(ErrorKind::Backend, "unexpected reply").with_backend(BACKEND)),
    };
    let (Some(value), Some(Value::Int(ms))) = (parts.next().and_then(bytes_of), parts.next())
    else {
        return Err(Error::new(ErrorKind::Backend, "unexpected reply").with_backend(BACKEND));
    };
    // -1: no TTL. -2 cannot follow a found value inside one script.
    let ttl = u64::try_from(ms).ok().map(Duration::from_millis);
    Ok(Some(ValueTtl::new(value, ttl)))
}

impl RedisCache {
    /// Runs one command per key: one pipeline (per chunk) on a single
    /// server, one per master in a cluster. One result per key; an error
    /// reply is that key's error, carrying "CODE details". `resend` and
    /// `read`: see `cluster::Batch` (a single server never resends, and
    /// reads on its master).
    async fn per_key(
        &self,
        full: &[String],
        cmd: PerKey<'_>,
        (resend, read): (bool, bool),
    ) -> Vec<Result<Value>> {
        let conn = match &self.conn {
            Conn::Cluster(c) => {
                let b = cluster::Batch {
                    keys: full,
                    single: cmd,
                    multi: None,
                    resend,
                    read,
                };
                return Self::cluster_run(c, &self.endpoint, &b).await;
            }
            Conn::Single(conn) => conn,
        };
        let sends = Self::groups(full).into_iter().map(|g| async move {
            let mut p = redis::pipe();
            p.ignore_errors();
            for &i in &g {
                p.add_command(cmd(i));
            }
            let r = p.query_async::<Vec<Value>>(&mut conn.clone()).await;
            (g, r.map_err(|e| self.err(e)))
        });
        let mut out: Vec<Result<Value>> = (0..full.len()).map(|_| Ok(Value::Nil)).collect();
        let mut replies = futures::stream::iter(sends).buffer_unordered(IN_FLIGHT);
        while let Some((g, r)) = replies.next().await {
            let r = r.and_then(|vals| {
                if vals.len() == g.len() {
                    return Ok(vals);
                }
                Err(Error::new(ErrorKind::Connection, "short pipeline reply")
                    .with_backend(BACKEND)
                    .with_context("endpoint", &self.endpoint))
            });
            let vals = match r {
                Ok(vals) => vals,
                Err(e) => {
                    for &i in &g {
                        out[i] = Err(e.clone());
                    }
                    continue;
                }
            };
            for (i, v) in g.into_iter().zip(vals) {
                out[i] = match v {
                    Value::ServerError(e) => {
                        Err(server_error(&e).with_context("endpoint", &self.endpoint))
                    }
                    v => Ok(v),
                };
            }
        }
        out
    }

    /// Runs `script` once per key (`KEYS[1]`, then what `argv` adds) with
    /// `EVALSHA`. Keys whose node did not know the script go again: one
    /// with `EVAL` (which loads it); several after a `SCRIPT LOAD` on every
    /// master, with `EVAL` only for any still refused (a failover between).
    async fn eval_each(
        &self,
        script: &Script,
        full: &[String],
        argv: &(dyn Fn(usize, &mut Cmd) + Sync),
    ) -> Vec<Result<Value>> {
        let call = |name: &str, body: &str, i: usize| {
            let mut c = redis::cmd(name);
            c.arg(body).arg(1).arg(&full[i]);
            argv(i, &mut c);
            c
        };
        let mut out = self
            .per_key(full, &|i| call("EVALSHA", script.sha, i), (script.resend, script.read))
            .await;
        let mut again = no_script(&out, 0..full.len());
        if again.len() > 1 && self.load_everywhere(script).await.is_ok() {
            let keys: Vec<String> = again.iter().map(|&i| full[i].clone()).collect();
            let retried = self
                .per_key(&keys, &|j| call("EVALSHA", script.sha, again[j]), (script.resend, script.read))
                .await;
            for (&i, r) in again.iter().zip(retried) {
                out[i] = r;
            }
            again = no_script(&out, again);
        }
        if again.is_empty() {
            return out;
        }
        let keys: Vec<String> = again.iter().map(|&i| full[i].clone()).collect();
        let retried = self
            .per_key(&keys, &|j| call("EVAL", script.text, again[j]), (script.resend, script.read))
            .await;
        for (i, r) in again.into_iter().zip(retried) {
            out[i] = r;
        }
        out
    }

    /// `SCRIPT LOAD` on every master (the one server in single mode).
    async fn load_everywhere(&self, script: &Script) -> Result<()> {
        self.on_nodes(|nodes| async move {
            for mut n in nodes {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(script.text)
                    .query_async(&mut n)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            Ok(())
        })
        .await
    }

    /// One key's command through [`RedisCache::per_key`].
    async fn one_key(
        &self,
        key: &str,
        cmd: impl Fn(&str) -> Cmd + Sync,
        resend: bool,
    ) -> Result<Value> {
        let full = [self.key(key)];
        let r = self.per_key(&full, &|_| cmd(&full[0]), (resend, false)).await;
        first(r).map_err(|e| e.with_context("key", key))
    }

    /// One key's script through [`RedisCache::eval_each`].
    async fn eval_one(&self, script: &Script, key: &str, args: &[&[u8]]) -> Result<Value> {
        let full = [self.key(key)];
        let argv = |_: usize, c: &mut Cmd| {
            for a in args {
                c.arg(*a);
            }
        };
        first(self.eval_each(script, &full, &argv).await)
    }

    /// `SET k v NX [PX ms]`: `OK` when it stored, nil when the key was there.
    pub(super) async fn add_impl(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let px = self.px(ttl)?;
        let set_nx = |full: &str| {
            let mut c = Self::set_command(full, value, px);
            c.arg("NX");
            c
        };
        let v = self.one_key(key, set_nx, false).await?;
        let stored = !matches!(v, Value::Nil);
        if stored {
            self.counters.set(1);
        }
        Ok(stored)
    }

    /// The [`INCR`] script, given the default TTL for a new key.
    pub(super) async fn incr_impl(&self, key: &str, delta: i64) -> Result<i64> {
        let delta_arg = delta.to_string();
        let px_arg = self.px(None)?.map(|ms| ms.to_string());
        let mut args: Vec<&[u8]> = vec![delta_arg.as_bytes()];
        if let Some(px) = &px_arg {
            args.push(px.as_bytes());
        }
        let v = self
            .eval_one(&INCR, key, &args)
            .await
            .map_err(|e| incr_error(e, key, delta))?;
        let n = bytes_of(v)
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok())
            .ok_or_else(|| {
                Error::new(ErrorKind::Backend, "unexpected reply to incr")
                    .with_backend(BACKEND)
                    .with_context("key", key)
            })?;
        self.counters.set(1);
        Ok(n)
    }

    /// The [`COMPARE_AND_SET`] script.
    pub(super) async fn compare_and_set_impl(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let px = self.px(ttl)?.map(|ms| ms.to_string());
        let mut args: Vec<&[u8]> = vec![expected, new];
        if let Some(px) = &px {
            args.push(px.as_bytes());
        }
        let v = self
            .eval_one(&COMPARE_AND_SET, key, &args)
            .await
            .map_err(|e| e.with_context("key", key))?;
        let stored = matches!(v, Value::Int(1));
        if stored {
            self.counters.set(1);
        }
        Ok(stored)
    }

    /// `PEXPIRE`, or the [`PERSIST`] script when the TTL is "never".
    pub(super) async fn touch_impl(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let v = match self.px(ttl)? {
            Some(ms) => {
                let ms = ms.to_string();
                let pexpire = |full: &str| redis::cmd("PEXPIRE").arg(full).arg(&ms).clone();
                self.one_key(key, pexpire, true).await?
            }
            None => return self.persist_impl(key).await,
        };
        Ok(matches!(v, Value::Int(1)))
    }

    /// The [`PERSIST`] script: `persist`, and `touch` to "never".
    pub(super) async fn persist_impl(&self, key: &str) -> Result<bool> {
        let v = self
            .eval_one(&PERSIST, key, &[])
            .await
            .map_err(|e| e.with_context("key", key))?;
        Ok(matches!(v, Value::Int(1)))
    }

    /// `GET` + `PTTL` pipelined on the direct connection when it can, as
    /// `get` does (a round trip through the multiplexed one costs more);
    /// else the [`GET_TTL`] script.
    pub(super) async fn get_with_ttl_impl(&self, key: &str) -> Result<Option<ValueTtl>> {
        if let Some(mut r) = self.replica() {
            // A replica runs no script that might write: GET + PTTL.
            let full = self.key(key);
            let mut p = redis::pipe();
            p.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
            let (v, ms): (Option<Vec<u8>>, i64) = p
                .query_async(&mut r)
                .await
                .map_err(|e| self.err(e).with_context("key", key))?;
            let got = v.map(|v| {
                let ttl = u64::try_from(ms).ok().map(Duration::from_millis);
                ValueTtl::new(Bytes::from(v), if ms == -2 { Some(Duration::ZERO) } else { ttl })
            });
            self.counters.read(std::slice::from_ref(&got));
            return Ok(got);
        }
        if let Some(d) = &self.direct_ttl {
            let full = self.key(key);
            let got = match d.get_pttl(full.as_bytes()).await {
                direct::Got::Value(v) => v.map(|(v, ms)| {
                    let ttl = u64::try_from(ms).ok().map(Duration::from_millis);
                    ValueTtl::new(Bytes::from(v), ttl)
                }),
                direct::Got::TimedOut => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("no answer within {:?}", self.response_timeout),
                    )
                    .with_backend(BACKEND)
                    .with_context("endpoint", &self.endpoint)
                    .with_context("key", key));
                }
                direct::Got::Elsewhere => return self.get_with_ttl_managed(key).await,
            };
            self.counters.read(std::slice::from_ref(&got));
            return Ok(got);
        }
        self.get_with_ttl_managed(key).await
    }

    /// [`RedisCache::get_with_ttl_impl`] through the connection manager or
    /// the cluster router (NOSCRIPT handled).
    async fn get_with_ttl_managed(&self, key: &str) -> Result<Option<ValueTtl>> {
        let v = self
            .eval_one(&GET_TTL, key, &[])
            .await
            .and_then(value_ttl)
            .map_err(|e| e.with_context("key", key))?;
        self.counters.read(std::slice::from_ref(&v));
        Ok(v)
    }

    /// The [`GET_TTL`] script for each key, pipelined.
    pub(super) async fn get_many_with_ttl_impl(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<ValueTtl>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let out = self
            .eval_each(&GET_TTL, &full, &|_, _| {})
            .await
            .into_iter()
            .zip(keys)
            .map(|(r, k)| r.and_then(value_ttl).map_err(|e| e.with_context("key", k)))
            .collect::<Result<Vec<_>>>()?;
        self.counters.read(&out);
        Ok(out)
    }
}

/// Those of `idx` whose result is a `NOSCRIPT` refusal.
fn no_script(out: &[Result<Value>], idx: impl IntoIterator<Item = usize>) -> Vec<usize> {
    idx.into_iter()
        .filter(|&i| matches!(&out[i], Err(e) if is_reply(e, "NOSCRIPT")))
        .collect()
}

/// The one result of a one-key call.
fn first(r: Vec<Result<Value>>) -> Result<Value> {
    r.into_iter()
        .next()
        .unwrap_or_else(|| Err(Error::new(ErrorKind::Backend, "no reply").with_backend(BACKEND)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified() {
        let e = Error::new(ErrorKind::Backend, "NOSCRIPT No matching script.");
        assert!(is_reply(&e, "NOSCRIPT"));
        assert!(!is_reply(&e, "ERR"));
        let e = Error::new(
            ErrorKind::Backend,
            "ERR value is not an integer or out of range script: 7a66dc, on @user_script:1.",
        );
        let e = incr_error(e, "k", 1);
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("key=k"), "{e}");
        let e = Error::new(ErrorKind::Backend, "ERR increment or decrement would overflow");
        assert!(incr_error(e, "k", 5).to_string().contains("overflow"));
        let e = Error::new(ErrorKind::Timeout, "no answer");
        assert_eq!(incr_error(e, "k", 1).kind(), ErrorKind::Timeout);
    }

    #[test]
    fn ttl_replies() {
        let v = Value::Array(vec![Value::BulkString(b"x".to_vec()), Value::Int(-1)]);
        assert_eq!(
            value_ttl(v).unwrap(),
            Some(ValueTtl::new(Bytes::from_static(b"x"), None))
        );
        let v = Value::Array(vec![Value::BulkString(b"x".to_vec()), Value::Int(1500)]);
        let got = value_ttl(v).unwrap().unwrap();
        assert_eq!(got.ttl, Some(Duration::from_millis(1500)));
        assert_eq!(value_ttl(Value::Nil).unwrap(), None);
        assert!(value_ttl(Value::Int(3)).is_err());
    }
}

//! `redis+sentinel://` and `rediss+sentinel://`: a master found and followed
//! through Redis Sentinel.
//!
//! The master is whatever a sentinel answers to `SENTINEL
//! GET-MASTER-ADDR-BY-NAME` (the first that answers, starting with the last
//! that did), confirmed with `ROLE` on the node itself: a sentinel that has
//! not yet heard of a failover names a node that now says `slave`, and the
//! next sentinel is asked. Following the master is `follow`'s.

use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use super::{BACKEND, Certs, open_client};
use crate::error::{Error, ErrorKind, Result};
use crate::url::{Query, Target, check_host_port, driver_userinfo, url_err};

/// What a Sentinel URL names: the sentinels, the master's name, and how to
/// reach the data nodes they point to.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelSpec {
    /// Sentinel URLs, with the sentinel credentials (never printed).
    pub(crate) sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    pub(crate) master: String,
    /// A data node URL (scheme, data credentials, database) whose host and
    /// port are replaced by the address a sentinel gives.
    pub(crate) template: String,
}

impl std::fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSpec")
            .field("sentinels", &self.sentinels.len())
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// The sentinel part of a `redis+sentinel://` URL: from the body after the
/// userinfo (`s1:p1,s2:p2/MASTER[/db]`) and the query's sentinel options.
pub(super) fn parse(
    t: &Target<'_>,
    tls: bool,
    userinfo: Option<&str>,
    body: &str,
    q: &mut Query,
) -> Result<SentinelSpec> {
    let scheme = t.scheme;
    let (hosts, path) = body
        .split_once('/')
        .ok_or_else(|| url_err(format!("{scheme}: expected {scheme}://s1:p1,s2:p2/MASTER_NAME")))?;
    let (master, db) = match path.split_once('/') {
        Some((m, d)) => (m, Some(d)),
        None => (path, None),
    };
    if master.is_empty() {
        return Err(url_err(format!("{scheme}: missing the master's name after the sentinels")));
    }
    let db = match db.filter(|d| !d.is_empty()) {
        None => 0,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| url_err(format!("{scheme}: the database must be a number, not {d:?}")))?,
    };
    let base = if tls { "rediss" } else { "redis" };
    let data_creds = driver_userinfo("redis", userinfo)?;
    let s_user = q.take("sentinel_username");
    let s_pass = q.take("sentinel_password");
    // The query was percent-decoded: each part is escaped again for the
    // driver's URL.
    let s_creds = match (s_user, s_pass) {
        (None, None) => String::new(),
        (Some(_), None) => {
            return Err(url_err(format!("{scheme}: sentinel_username needs sentinel_password")));
        }
        (u, Some(p)) => {
            let user = u.as_deref().map(enc).unwrap_or_default();
            driver_userinfo("redis", Some(&format!("{user}:{}", enc(&p))))?
        }
    };
    let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Err(url_err(format!("{scheme}: missing sentinel host:port")));
    }
    for h in &hosts {
        check_host_port(t.redacted, h)?;
        if h.contains('/') {
            return Err(url_err(format!("bad host:port in {:?}", t.redacted)));
        }
    }
    let with_port = |h: &str| {
        if h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !h.ends_with(']') {
            h.to_string()
        } else {
            format!("{h}:26379")
        }
    };
    Ok(SentinelSpec {
        sentinels: hosts
            .iter()
            .map(|h| format!("{base}://{s_creds}{}", with_port(h)))
            .collect(),
        master: master.to_string(),
        template: format!("{base}://{data_creds}{}/{db}", with_port(hosts[0])),
    })
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `template` with its host and port replaced by `host:port`.
pub(crate) fn node_url(template: &str, host: &str, port: u16) -> Option<String> {
    let mut u = url::Url::parse(template).ok()?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    u.set_host(Some(&host)).ok()?;
    u.set_port(Some(port)).ok()?;
    Some(u.to_string())
}

/// Timeouts and TLS trust for the connections of one Sentinel set-up.
#[derive(Clone)]
pub(crate) struct Reach {
    pub(crate) certs: Certs,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl Reach {
    pub(super) async fn connect(&self, url: &str) -> std::result::Result<MultiplexedConnection, String> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let client = open_client(url, &self.certs).map_err(|e| e.to_string())?;
        let c = client.get_multiplexed_async_connection_with_config(&cfg);
        // The handshake (AUTH, SELECT) is bounded too: a stopped server
        // accepts the TCP connection and never answers.
        match tokio::time::timeout(self.connect_timeout + self.response_timeout, c).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer".into()),
        }
    }
}

/// What the sentinel at `url` says the master of `name` is.
pub(super) async fn ask_sentinel(reach: &Reach, url: &str, name: &str) -> std::result::Result<(String, u16), String> {
    let mut c = reach.connect(url).await?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(name)
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let (host, port) = addr.ok_or_else(|| format!("knows no master named {name:?}"))?;
    let port = port.parse().map_err(|_| format!("gave a bad port {port:?}"))?;
    Ok((host, port))
}

/// The node's `ROLE`: `master`, `slave` or `sentinel`.
async fn role(c: &mut MultiplexedConnection) -> std::result::Result<String, String> {
    let v: Value = redis::cmd("ROLE")
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    match v {
        Value::Array(parts) => match parts.into_iter().next() {
            Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Value::SimpleString(s)) => Ok(s),
            _ => Err("unexpected ROLE reply".into()),
        },
        _ => Err("unexpected ROLE reply".into()),
    }
}

/// A connection to the current master, checked with `ROLE`: asks the
/// sentinels from `first` on. Returns the sentinel that answered, the
/// master's URL and the connection.
pub(crate) async fn find_master(
    spec: &SentinelSpec,
    reach: &Reach,
    first: usize,
) -> Result<(usize, String, MultiplexedConnection)> {
    let n = spec.sentinels.len();
    let mut why = Vec::new();
    for i in (0..n).map(|k| (first + k) % n) {
        let (host, port) = match ask_sentinel(reach, &spec.sentinels[i], &spec.master).await {
            Ok(a) => a,
            Err(e) => {
                why.push(format!("sentinel {}: {e}", i + 1));
                continue;
            }
        };
        let Some(url) = node_url(&spec.template, &host, port) else {
            why.push(format!("sentinel {}: bad address {host}:{port}", i + 1));
            continue;
        };
        let mut c = match reach.connect(&url).await {
            Ok(c) => c,
            Err(e) => {
                why.push(format!("master {host}:{port} (from sentinel {}): {e}", i + 1));
                continue;
            }
        };
        match role(&mut c).await {
            // Asked again after the check: a master that was stopped while
            // a failover replaced it still says `master` when it resumes,
            // until the sentinels demote it; by then they name another.
            Ok(r) if r == "master" => match ask_sentinel(reach, &spec.sentinels[i], &spec.master).await {
                Ok(again) if again == (host.clone(), port) => return Ok((i, url, c)),
                Ok((h, p)) => why.push(format!("sentinel {} now names {h}:{p}", i + 1)),
                Err(e) => why.push(format!("sentinel {}: {e}", i + 1)),
            },
            Ok(r) => why.push(format!("{host}:{port} (from sentinel {}) is a {r}", i + 1)),
            Err(e) => why.push(format!("{host}:{port}: ROLE: {e}")),
        }
    }
    Err(Error::new(
        ErrorKind::Connection,
        format!("no master {:?} found: {}", spec.master, why.join("; ")),
    )
    .with_backend(BACKEND))
}

/// The URL of the master `cfg` (a Sentinel configuration) names now, for
/// connections of other layers (the tier's backplane). `None` when `cfg`
/// is not a Sentinel one.
pub(crate) async fn current_master(cfg: &super::RedisConfig) -> Option<Result<String>> {
    let spec = cfg.sentinel.as_ref()?;
    let reach = match super::config::tls_certs(&cfg.tls_ca) {
        Ok(certs) => Reach {
            certs,
            connect_timeout: cfg.connect_timeout,
            response_timeout: cfg.response_timeout,
        },
        Err(e) => return Some(Err(e)),
    };
    Some(find_master(spec, &reach, 0).await.map(|(_, url, _)| url))
}

/// The URL of the master the first sentinel that answers names (no
/// `ROLE` check: a cheap "has it moved?"). `None` when `cfg` is not a
/// Sentinel configuration or no sentinel answers.
pub(crate) async fn named_master(cfg: &super::RedisConfig) -> Option<String> {
    let spec = cfg.sentinel.as_ref()?;
    let reach = Reach {
        certs: super::config::tls_certs(&cfg.tls_ca).ok()?,
        connect_timeout: cfg.connect_timeout,
        response_timeout: cfg.response_timeout,
    };
    for url in &spec.sentinels {
        if let Ok((h, p)) = ask_sentinel(&reach, url, &spec.master).await {
            return node_url(&spec.template, &h, p);
        }
    }
    None
}

/// The replicas the sentinel at `url` lists as up and linked to the master.
pub(super) async fn list_replicas(reach: &Reach, url: &str, spec: &SentinelSpec) -> Option<Vec<String>> {
    let mut c = reach.connect(url).await.ok()?;
    let v: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("REPLICAS")
        .arg(&spec.master)
        .query_async(&mut c)
        .await
        .ok()?;
    Some(
        v.into_iter()
            .filter(|r| {
                let flags = r.get("flags").map(String::as_str).unwrap_or("");
                !flags.contains("down") && !flags.contains("disconnected")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
            })
            .filter_map(|r| {
                let port = r.get("port")?.parse().ok()?;
                node_url(&spec.template, r.get("ip")?, port)
            })
            .collect(),
    )
}

/// Whether a sentinel's message is about the master `name`.
pub(super) fn concerns(name: &str, channel: &str, payload: &str) -> bool {
    let words: Vec<&str> = payload.split(' ').collect();
    match channel {
        // `NAME old-ip old-port new-ip new-port`
        "+switch-master" => words.first() == Some(&name),
        // `slave ip:port ip port @ NAME master-ip master-port`
        _ => {
            let at = words.iter().position(|w| *w == "@");
            at.and_then(|a| words.get(a + 1)) == Some(&name)
        }
    }
}

/// A stream that yields when any sentinel of `cfg` announces a failover
/// of its master beginning (`+selected-slave`) or done (`+switch-master`);
/// `None` when `cfg` is not a Sentinel configuration or no sentinel takes
/// the subscription. For other layers (the tier's backplane).
pub(crate) async fn failover_events(
    cfg: &super::RedisConfig,
) -> Option<futures::stream::BoxStream<'static, ()>> {
    let spec = cfg.sentinel.as_ref()?;
    let reach = Reach {
        certs: super::config::tls_certs(&cfg.tls_ca).ok()?,
        connect_timeout: cfg.connect_timeout,
        response_timeout: cfg.response_timeout,
    };
    let name = spec.master.clone();
    let s = subscribe_events(spec, &reach).await?;
    Some(
        s.filter_map(move |(c, p)| std::future::ready(concerns(&name, &c, &p).then_some(())))
            .boxed(),
    )
}

pub(super) type Messages = futures::stream::SelectAll<futures::stream::BoxStream<'static, (String, String)>>;

/// The failover messages of every sentinel that takes the subscription
/// (only the sentinel leading a failover announces its steps).
pub(super) async fn subscribe_events(spec: &SentinelSpec, reach: &Reach) -> Option<Messages> {
    let mut all = futures::stream::SelectAll::new();
    for url in &spec.sentinels {
        let Ok(client) = open_client(url, &reach.certs) else {
            continue;
        };
        let sub = async {
            let mut ps = client.get_async_pubsub().await.ok()?;
            ps.subscribe(&["+switch-master", "+selected-slave"]).await.ok()?;
            Some(ps)
        };
        let Ok(Some(ps)) = tokio::time::timeout(
            reach.connect_timeout + reach.response_timeout,
            sub,
        )
        .await
        else {
            continue;
        };
        let s = ps
            .into_on_message()
            .map(|m| {
                let payload = m.get_payload::<String>().unwrap_or_default();
                (m.get_channel_name().to_string(), payload)
            })
            .boxed();
        all.push(s);
    }
    (!all.is_empty()).then_some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> Result<(SentinelSpec, Query)> {
        let (scheme, rest) = url.split_once(':').unwrap();
        let t = Target {
            scheme,
            rest,
            redacted: url,
            layer_options: &[],
        };
        let body = rest.strip_prefix("//").unwrap();
        let (userinfo, after) = crate::url::split_userinfo(body);
        let (body, q) = crate::url::split_query(after);
        let mut q = Query::parse("redis", q)?;
        let s = parse(&t, scheme.starts_with("rediss"), userinfo, body, &mut q)?;
        Ok((s, q))
    }

    #[test]
    fn urls() {
        let (s, _) = spec("redis+sentinel://u:p%40w@h1:1,h2/mymaster/3?sentinel_password=s%26x").unwrap();
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.sentinels, ["redis://:s%26x@h1:1", "redis://:s%26x@h2:26379"]);
        assert_eq!(s.template, "redis://u:p%40w@h1:1/3");
        assert_eq!(
            node_url(&s.template, "10.0.0.2", 6380).unwrap(),
            "redis://u:p%40w@10.0.0.2:6380/3"
        );
        let (s, _) = spec("rediss+sentinel://h1:1/m?sentinel_username=su&sentinel_password=sp").unwrap();
        assert!(spec("redis+sentinel://h1:1/m?sentinel_username=su").is_err());
        assert_eq!(s.sentinels, ["rediss://su:sp@h1:1"]);
        assert_eq!(s.template, "rediss://h1:1/0");
        for bad in [
            "redis+sentinel://h1:1",
            "redis+sentinel://h1:1/",
            "redis+sentinel:///m",
            "redis+sentinel://h1:1/m/x",
            "redis+sentinel://h1:x/m",
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
    }
}

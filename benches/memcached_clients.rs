//! Our memcached client against the two Rust memcached crates most used, on the same
//! data, same run: 1M sets of 100-byte values (async-memcached 0.9:
//! `set_multi`, pipelined ASCII `set`, batches of 1,000 on one connection;
//! memcache 0.21's experimental async meta client: `set_many`, batches of
//! 1,000; unicache: one `set_many`), then 1,000-key multi-gets.
//! Starts its own memcached on a free loopback port.
//!
//! cargo bench --bench memcached_clients   (UNICACHE_BENCH_N=100000 quicker)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_memcached::AsciiProtocol;

fn main() {
    let n: usize = std::env::var("UNICACHE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("memcached")
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "1024",
            "-t",
            "2",
            "-u",
            "root",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memcached not found: apt-get install -y memcached");
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys: Vec<String> = (0..n).map(|i| format!("key:{i}")).collect();
        let value = vec![b'x'; 100];
        let mut amc = async_memcached::Client::new(format!("tcp://127.0.0.1:{port}")).await.unwrap();
        let mc = memcache::exp::AsyncMemcache::connect([format!("127.0.0.1:{port}")])
            .await
            .unwrap();
        let ours = unicache::open(&format!("memcached://127.0.0.1:{port}")).await.unwrap();
        for round in 1..=3 {
            amc.flush_all().await.unwrap();
            let t = Instant::now();
            for chunk in keys.chunks(1000) {
                let kv: Vec<(&str, &[u8])> = chunk.iter().map(|k| (k.as_str(), value.as_slice())).collect();
                let r = amc.set_multi(&kv, None, None).await.unwrap();
                assert!(r.values().all(|x| x.is_ok()));
            }
            let a = n as f64 / t.elapsed().as_secs_f64();
            amc.flush_all().await.unwrap();
            let t = Instant::now();
            for chunk in keys.chunks(1000) {
                let kv = chunk.iter().map(|k| (k.as_str(), value.as_slice()));
                mc.set_many(kv, memcache::exp::Ttl::NEVER).await.unwrap();
            }
            let m = n as f64 / t.elapsed().as_secs_f64();
            amc.flush_all().await.unwrap();
            let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value.as_slice())).collect();
            let t = Instant::now();
            ours.set_many(&entries, None).await.unwrap();
            let u = n as f64 / t.elapsed().as_secs_f64();
            println!(
                "round {round}: set {n}: async-memcached set_multi {a:.0}/s | memcache 0.21 exp set_many {m:.0}/s | unicache set_many {u:.0}/s ({:.2}x, {:.2}x)",
                u / a,
                u / m
            );

            let sample: Vec<&str> = keys[..1000].iter().map(String::as_str).collect();
            let mut ta = Vec::new();
            let mut tu = Vec::new();
            let mut tm = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let got: std::collections::HashMap<&str, Vec<u8>> =
                    mc.get_many(sample.iter().copied()).await.unwrap();
                tm.push(t.elapsed().as_micros());
                assert_eq!(got.len(), 1000);
                let t = Instant::now();
                let got = amc.get_multi(&sample).await.unwrap();
                ta.push(t.elapsed().as_micros());
                assert_eq!(got.len(), 1000);
                let t = Instant::now();
                let got = ours.get_many(&sample).await.unwrap();
                tu.push(t.elapsed().as_micros());
                assert!(got.iter().all(|v| v.is_some()));
            }
            ta.sort();
            tu.sort();
            tm.sort();
            println!(
                "round {round}: get 1000 keys p50: async-memcached get_multi {} us | memcache 0.21 exp get_many {} us | unicache get_many {} us",
                ta[100], tm[100], tu[100]
            );
        }
    });
    let _ = server.kill();
    let _ = server.wait();
}

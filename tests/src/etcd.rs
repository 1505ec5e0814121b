//! A real etcd cluster for tests: `n` members of Debian's `etcd` (installed by
//! `tests/etcd/setup.sh`) on 127.0.0.1 ports of their own, in a temporary directory, killed when
//! dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::free_addr;

/// A running etcd cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    initial: String,
    token: String,
    /// More flags for every member.
    flags: Vec<String>,
}

struct Member {
    name: String,
    client: String,
    peer: String,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Start `n` members and wait until every one is healthy (a leader is elected).
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    /// [`start`](Self::start), each member also given `flags` (`--max-txn-ops 1024`, say).
    pub fn start_with(n: usize, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("http://{}", free_addr()),
                peer: format!("http://{}", free_addr()),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("spear-test-{}-{}", std::process::id(), dir.path().display());
        let mut cluster = Self {
            members,
            dir,
            initial,
            token,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .unwrap();
        let m = &self.members[i];
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            // Fast elections, so that a test that kills a member does not wait long.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (installed by tests/etcd/setup.sh)");
        self.members[i].child = Some(child);
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// Wait until member `i` answers `/health` with a leader.
    pub fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.members[i]
            .client
            .trim_start_matches("http://")
            .to_owned();
        loop {
            if health(&addr) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} not healthy within 30 s; its log:\n{}",
                std::fs::read_to_string(self.log(i)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// The endpoints as a JSON array (for a plugin's configuration).
    pub fn endpoints_json(&self) -> String {
        serde_json::to_string(&self.endpoints()).unwrap()
    }

    /// The index of the member that leads the cluster now (asked with `etcdctl endpoint status`).
    pub fn leader(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("etcdctl endpoint status: {e}: {out}"));
        let statuses = status.as_array().expect("one status per endpoint");
        let leader = statuses[0]["Status"]["leader"]
            .as_u64()
            .expect("a leader id");
        let endpoint = statuses
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|s| s["Endpoint"].as_str())
            .expect("the leader among the endpoints");
        self.members
            .iter()
            .position(|m| m.client == endpoint)
            .expect("a member of this cluster")
    }

    /// Run `etcdctl` on the live members with `args`; its standard output (it must succeed).
    /// The highest raft index the first live member has applied: it moves with every write
    /// proposed, a transaction whose checks fail included.
    pub fn applied_index(&self) -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&self.etcdctl(&["endpoint", "status", "-w", "json"])).unwrap();
        status[0]["Status"]["raftAppliedIndex"]
            .as_u64()
            .unwrap_or_else(|| panic!("no raftAppliedIndex in {status}"))
    }

    /// Run `etcdctl` with `args` against the live members; its standard output.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.clone())
            .collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .args(args)
            .output()
            .expect("run etcdctl (installed with etcd-server)");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start member `i` again (on its data) after [`kill`](Self::kill), and wait until healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Whether the member at `addr` says it is healthy.
fn health(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains(r#""health":"true""#)
}

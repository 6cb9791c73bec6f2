//! A real OpenBao cluster on Raft storage, on loopback: one `bao server` per node with its own
//! config file and data folder, node 1 initialized (one unseal key) and set up like the homelab
//! (`bao::set_up`), the others joined to it (`sys/storage/raft/join`) and unsealed, and waited
//! for until autopilot counts every node a healthy voter. Nodes can be killed, stopped and
//! restarted (a restarted node is unsealed and rejoins from its own Raft data).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    bao::{self, Setup},
    procs::{Subprocess, free_port, wait_until},
};

/// Longest a step of starting, joining or electing may take before the test fails.
const STEP: Duration = Duration::from_secs(60);

pub struct Node {
    pub id: String,
    pub addr: String,
    config: PathBuf,
    /// None while the node is down.
    process: Option<Subprocess>,
    /// Starts so far, for the log file names.
    starts: usize,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub root_token: String,
    pub setup: Setup,
    unseal_key: String,
    bao: PathBuf,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Cluster {
    /// `size` nodes, node 1 active, all voters; the PKI and vacme's token are on node 1.
    pub async fn start(tools: &Path, dir: &Path, size: usize) -> Cluster {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut nodes = Vec::new();
        for i in 1..=size {
            let id = format!("n{i}");
            let (api, cluster) = (free_port(), free_port());
            let data = dir.join(&id).join("raft");
            std::fs::create_dir_all(&data).unwrap();
            let hcl = format!(
                "storage \"raft\" {{\n  path = \"{data}\"\n  node_id = \"{id}\"\n  performance_multiplier = 1\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  \
                 tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"https://127.0.0.1:{cluster}\"\n\
                 disable_mlock = true\n",
                data = data.display(),
            );
            let config = dir.join(format!("{id}.hcl"));
            std::fs::write(&config, hcl).unwrap();
            nodes.push(Node { id, addr: format!("http://127.0.0.1:{api}"), config, process: None, starts: 0 });
        }
        let mut c = Cluster {
            nodes,
            root_token: String::new(),
            setup: Setup {
                root_pem: String::new(),
                token_file: PathBuf::new(),
                role_id_file: PathBuf::new(),
                secret_id_file: PathBuf::new(),
            },
            unseal_key: String::new(),
            bao: tools.join("bao"),
            dir: dir.to_owned(),
            http,
        };
        for i in 0..size {
            c.spawn(i);
        }
        for i in 0..size {
            c.wait_answers(i).await;
        }
        let first = c.nodes[0].addr.clone();
        let init = c.put(&first, "sys/init", json!({"secret_shares": 1, "secret_threshold": 1})).await;
        c.unseal_key = init["keys_base64"][0].as_str().unwrap().to_owned();
        c.root_token = init["root_token"].as_str().unwrap().to_owned();
        c.unseal(0).await;
        c.wait_active(0).await;
        // Autopilot promotes a joined node to voter once it has been stable this long (10 s by
        // default).
        bao::call(
            &c.http,
            &first,
            &c.root_token,
            reqwest::Method::POST,
            "sys/storage/raft/autopilot/configuration",
            Some(json!({"server_stabilization_time": "1s"})),
        )
        .await;
        c.setup = bao::set_up(&c.http, &first, &c.root_token, dir).await;
        for i in 1..size {
            let joined =
                c.put(&c.nodes[i].addr.clone(), "sys/storage/raft/join", json!({"leader_api_addr": first})).await;
            assert_eq!(joined["joined"], true, "{}: {joined}", c.nodes[i].id);
            c.unseal(i).await;
        }
        c.wait_healthy().await;
        c
    }

    /// Every node's address, in node order (what vacme is given).
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.starts += 1;
        let mut cmd = Command::new(&self.bao);
        cmd.arg("server")
            .arg(format!("-config={}", node.config.display()))
            .env("HOME", &self.dir)
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR");
        let name = format!("bao-{}-{}", node.id, node.starts);
        node.process = Some(Subprocess::spawn(&name, &mut cmd, &self.dir));
    }

    /// SIGKILL: the node stops mid-whatever, connections reset, no step-down.
    pub fn kill(&mut self, i: usize) {
        let p = self.nodes[i].process.take().expect("the node is running");
        p.signal("KILL");
        drop(p);
    }

    /// SIGTERM and wait for the node to exit (an active node steps down first).
    pub fn stop(&mut self, i: usize) {
        let mut p = self.nodes[i].process.take().expect("the node is running");
        tokio::task::block_in_place(|| p.stop(Duration::from_secs(30)));
    }

    /// Starts a stopped node again from its own data, unseals it and waits until every node is a
    /// healthy voter again.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_answers(i).await;
        self.unseal(i).await;
        self.wait_healthy().await;
    }

    /// The active node as the running nodes see it, once they agree on a running one.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Some(leader) = self.agreed_leader().await {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the running nodes did not agree on an active node\n{}", self.output());
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut seen = Vec::new();
        for n in self.running() {
            let v = self.get(&self.nodes[n].addr, "sys/leader").await.ok()?;
            seen.push(v["leader_address"].as_str().unwrap_or_default().to_owned());
        }
        let first = seen.first()?;
        let leader = self.running().find(|&n| self.nodes[n].addr == *first)?;
        (seen.iter().all(|s| s == first) && self.health(leader).await == Some(200)).then_some(leader)
    }

    /// Waits for a running node other than `old` to be active; returns it and how long that took.
    pub async fn new_leader(&self, old: usize, since: Instant) -> (usize, Duration) {
        let leader = self.leader().await;
        assert_ne!(leader, old, "a stopped node cannot be active");
        (leader, since.elapsed())
    }

    /// Serials (colon form) pki_int has issued, read on the active node.
    pub async fn issued_serials(&self) -> Vec<String> {
        let leader = self.leader().await;
        bao::issued_serials(&self.http, &self.nodes[leader].addr, &self.root_token).await
    }

    /// How many certificates pki_int holds, read on any running node without waiting for an
    /// election (None while none answers).
    pub async fn issued_now(&self) -> Option<usize> {
        for n in self.running() {
            if let Ok(serials) = bao::try_issued_serials(&self.http, &self.nodes[n].addr, &self.root_token).await {
                return Some(serials.len());
            }
        }
        None
    }

    /// Every node's output, for failure messages.
    pub fn output(&self) -> String {
        self.nodes.iter().filter_map(|n| n.process.as_ref()).map(Subprocess::output).collect::<Vec<_>>().join("\n")
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].process.is_some())
    }

    /// `sys/health`'s status: 200 active, 429 standby, 503 sealed, 501 not initialized.
    async fn health(&self, i: usize) -> Option<u16> {
        let url = format!("{}/v1/sys/health", self.nodes[i].addr);
        self.http.get(url).send().await.ok().map(|r| r.status().as_u16())
    }

    async fn wait_answers(&self, i: usize) {
        let up = wait_until(STEP, || async { self.health(i).await.is_some() }).await;
        assert!(up, "{} did not start\n{}", self.nodes[i].id, self.output());
    }

    async fn wait_active(&self, i: usize) {
        let active = wait_until(STEP, || async { self.health(i).await == Some(200) }).await;
        assert!(active, "{} did not become active\n{}", self.nodes[i].id, self.output());
    }

    async fn unseal(&self, i: usize) {
        let v = self.put(&self.nodes[i].addr, "sys/unseal", json!({"key": self.unseal_key})).await;
        assert_eq!(v["initialized"], true, "{}: {v}", self.nodes[i].id);
    }

    /// Until autopilot, asked on the active node, counts every node a healthy voter.
    async fn wait_healthy(&self) {
        let want = self.nodes.len();
        let healthy = wait_until(STEP, || async {
            let leader = self.leader().await;
            let Ok(v) = self.get(&self.nodes[leader].addr, "sys/storage/raft/autopilot/state").await else {
                return false;
            };
            let servers = v["data"]["servers"].as_object().cloned().unwrap_or_default();
            v["data"]["healthy"] == true
                && v["data"]["voters"].as_array().map_or(0, Vec::len) == want
                && servers.len() == want
                && servers.values().all(|s| s["healthy"] == true)
        })
        .await;
        assert!(healthy, "the cluster did not become healthy with {want} voters\n{}", self.output());
        // A node autopilot calls healthy may still be unsealing: wait for its own answer.
        for i in 0..want {
            let up = wait_until(STEP, || async { matches!(self.health(i).await, Some(200 | 429)) }).await;
            assert!(up, "{} is not serving\n{}", self.nodes[i].id, self.output());
        }
    }

    async fn get(&self, addr: &str, path: &str) -> Result<Value, String> {
        let res = self
            .http
            .get(format!("{addr}/v1/{path}"))
            .header("X-Vault-Token", &self.root_token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(res.status().to_string());
        }
        res.json().await.map_err(|e| e.to_string())
    }

    /// A PUT without a token (init, unseal, join); panics with the answer on failure.
    async fn put(&self, addr: &str, path: &str, body: Value) -> Value {
        let res = self.http.put(format!("{addr}/v1/{path}")).json(&body).send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "PUT {path} at {addr}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

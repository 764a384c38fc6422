//! A DNS server for tests: answers A and AAAA queries over UDP on
//! loopback from a table the test changes while it runs, counts every
//! query per name, and fails on request (SERVFAIL, or no answer at all).
//! Messages are encoded and decoded by hickory-proto, the DNS library the
//! resolver under test also uses; the resolver's own code (what it asks,
//! when, what it keeps) is what the tests observe.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// How a name is answered.
#[derive(Clone, Debug)]
enum Answer {
    Addresses(Vec<IpAddr>, u32),
    ServFail,
    Silent,
}

#[derive(Default)]
struct Table {
    answers: HashMap<String, Answer>,
    queries: HashMap<String, u64>,
}

/// The server; stops when dropped.
pub struct CountingDns {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingDns {
    /// Starts on a free UDP port of 127.0.0.1.
    pub async fn start() -> CountingDns {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind the test DNS server: {e}"));
        let addr = socket
            .local_addr()
            .unwrap_or_else(|e| panic!("the test DNS server's address: {e}"));
        let table = Arc::new(Mutex::new(Table::default()));
        let shared = table.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Some(reply) = answer(&shared, &buf[..n]) else {
                    continue;
                };
                let _ = socket.send_to(&reply, from).await;
            }
        });
        CountingDns { addr, table, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `name` answers `addresses` with `ttl` seconds from now on.
    pub fn set(&self, name: &str, addresses: &[IpAddr], ttl: u32) {
        self.lock()
            .answers
            .insert(key(name), Answer::Addresses(addresses.to_vec(), ttl));
    }

    /// `name` answers SERVFAIL from now on.
    pub fn fail(&self, name: &str) {
        self.lock().answers.insert(key(name), Answer::ServFail);
    }

    /// Queries for `name` get no answer at all from now on.
    pub fn silence(&self, name: &str) {
        self.lock().answers.insert(key(name), Answer::Silent);
    }

    /// The queries for `name` so far (every type).
    pub fn queries(&self, name: &str) -> u64 {
        self.lock().queries.get(&key(name)).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for CountingDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The reply to one datagram (`None`: stay silent).
fn answer(table: &Mutex<Table>, datagram: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(datagram).ok()?;
    let query = request.queries().first()?.clone();
    let name = key(&query.name().to_ascii());
    let found = {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        *t.queries.entry(name.clone()).or_default() += 1;
        t.answers.get(&name).cloned()
    };
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .add_query(query.clone());
    match found {
        None => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        Some(Answer::Silent) => return None,
        Some(Answer::ServFail) => {
            reply.set_response_code(ResponseCode::ServFail);
        }
        Some(Answer::Addresses(addresses, ttl)) => {
            for ip in addresses {
                let rdata = match (ip, query.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                    _ => continue,
                };
                reply.add_answer(Record::from_rdata(query.name().clone(), ttl, rdata));
            }
        }
    }
    reply.to_vec().ok()
}

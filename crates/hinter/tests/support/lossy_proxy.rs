//! A TCP proxy on loopback that loses replies, for tests of retried requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A proxy in front of `upstream`: each of its first `lose` connections passes the request
/// on, waits until the server's answer begins (the server committed and is answering) and
/// then closes the connection without passing the answer on, as when a connection breaks at
/// that moment. Later connections pass everything both ways.
pub struct LossyProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LossyProxy {
    pub async fn start(upstream: SocketAddr, lose: usize) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(client, upstream, n < lose));
            }
        });
        LossyProxy {
            addr,
            connections,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, lose_reply: bool) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if !lose_reply {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let forward =
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    let mut first = [0u8; 1];
    let _ = server_read.read(&mut first).await;
    // Everything of this connection closes here: the client never sees an answer.
    forward.abort();
    let _ = forward.await;
    drop(client_write);
    drop(server_read);
}

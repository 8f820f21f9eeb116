//! A TCP proxy in front of the simulator that a test can switch between passing traffic,
//! refusing connections (no listener on the port: connect errors) and hanging (requests reach
//! the simulator, its answers never come back). Switching away from `Pass` cuts every
//! connection made before, so pooled keep-alive connections do not slip through.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Hang,
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` on a free loopback port, passing traffic.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("proxy binds");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(run(Some(listener), addr, upstream, rx));
        Proxy {
            addr,
            mode: tx,
            task,
        }
    }

    /// `http://addr/api`, the base URL a client points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(128)
}

async fn run(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    loop {
        let now = *mode.borrow_and_update();
        if now == Mode::Refuse {
            listener = None; // the port refuses connections
        } else if listener.is_none() {
            match bind(addr) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some(l) = &listener else {
            let _ = mode.changed().await;
            continue;
        };
        tokio::select! {
            _ = mode.changed() => {}
            accepted = l.accept() => {
                if let Ok((conn, _)) = accepted {
                    tokio::spawn(serve(conn, upstream, now, mode.clone()));
                }
            }
        }
    }
}

/// One client connection, in the mode it was accepted in, until the mode changes.
async fn serve(client: TcpStream, upstream: SocketAddr, at: Mode, mut mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let hang = at == Mode::Hang;
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            // Hanging: the simulator answered, the answer never arrives.
            if !hang && cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        if hang {
            // Keep the client's connection open and silent.
            futures::future::pending::<()>().await;
        }
    };
    let both = async {
        tokio::join!(up, down);
    };
    tokio::select! {
        _ = both => {}
        _ = mode.wait_for(|m| *m != at) => {}
    }
}

//! A TCP proxy that cuts connections in the middle of responses, so clients retry requests the
//! broker already executed. Listens on one address per shard and forwards to the shard's real
//! address; bounded in time and in the number of cuts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct ChaosProxy {
    stop: Arc<AtomicBool>,
    chaos: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl ChaosProxy {
    /// Forwards `listen -> target` for each route, calm at first. While chaos is on (see
    /// `unleash`), every `cut_every`-th
    /// chunk coming back from the broker is dropped and both sides of its connection are
    /// closed, up to `max_cuts` times.
    pub fn start(
        routes: &[(SocketAddr, SocketAddr)],
        cut_every: usize,
        max_cuts: usize,
    ) -> ChaosProxy {
        let proxy = ChaosProxy {
            stop: Arc::new(AtomicBool::new(false)),
            chaos: Arc::new(AtomicBool::new(false)),
            cuts: Arc::new(AtomicUsize::new(0)),
        };
        let chunks = Arc::new(AtomicUsize::new(0));
        for (listen, target) in routes.iter().copied() {
            let listener = TcpListener::bind(listen).unwrap();
            listener.set_nonblocking(true).unwrap();
            let (stop, chaos, cuts, chunks) = (
                proxy.stop.clone(),
                proxy.chaos.clone(),
                proxy.cuts.clone(),
                chunks.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let Ok(broker) = TcpStream::connect(target) else {
                                continue;
                            };
                            client.set_nodelay(true).ok();
                            broker.set_nodelay(true).ok();
                            forward(client, broker, &chaos, &cuts, &chunks, cut_every, max_cuts);
                        }
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => break,
                    }
                }
            });
        }
        proxy
    }

    /// Starts cutting connections.
    pub fn unleash(&self) {
        self.chaos.store(true, Ordering::Relaxed);
    }

    /// Stops cutting; connections then pass through untouched.
    pub fn calm(&self) {
        self.chaos.store(false, Ordering::Relaxed);
    }

    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn forward(
    client: TcpStream,
    broker: TcpStream,
    chaos: &Arc<AtomicBool>,
    cuts: &Arc<AtomicUsize>,
    chunks: &Arc<AtomicUsize>,
    cut_every: usize,
    max_cuts: usize,
) {
    let (mut client_in, mut broker_out) =
        (client.try_clone().unwrap(), broker.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read) = client_in.read(&mut buffer) {
            if read == 0 || broker_out.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        broker_out.shutdown(Shutdown::Both).ok();
        client_in.shutdown(Shutdown::Both).ok();
    });
    let (chaos, cuts, chunks) = (chaos.clone(), cuts.clone(), chunks.clone());
    let (mut broker_in, mut client_out) = (broker, client);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read) = broker_in.read(&mut buffer) {
            if read == 0 {
                break;
            }
            let chunk = chunks.fetch_add(1, Ordering::Relaxed) + 1;
            if chaos.load(Ordering::Relaxed)
                && chunk % cut_every == 0
                && cuts.fetch_add(1, Ordering::Relaxed) < max_cuts
            {
                // The broker executed the request; its response is lost with the connection.
                break;
            }
            if client_out.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        broker_in.shutdown(Shutdown::Both).ok();
        client_out.shutdown(Shutdown::Both).ok();
    });
}

//! A UDP relay between the pipeline and the controller that keeps a copy of every datagram
//! the pipeline sent, so a test can replay a genuine, correctly signed message later — what
//! an attacker on the link would capture.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The relay.
pub struct Proxy {
    /// Where the pipeline sends to.
    pub addr: SocketAddr,
    /// Every datagram from the pipeline, in order.
    pub captured: Arc<Mutex<Vec<Vec<u8>>>>,
    toward_controller: UdpSocket,
    controller: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Relays between a pipeline (whoever sends to `addr`) and `controller`.
    pub fn start(controller: SocketAddr) -> Proxy {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        front.set_nonblocking(true).unwrap();
        back.set_nonblocking(true).unwrap();
        let addr = front.local_addr().unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let toward_controller = back.try_clone().unwrap();
        {
            let (captured, stop) = (captured.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut pipeline: Option<SocketAddr> = None;
                while !stop.load(Ordering::Relaxed) {
                    let mut idle = true;
                    while let Ok((n, from)) = front.recv_from(&mut buf) {
                        idle = false;
                        pipeline = Some(from);
                        captured.lock().unwrap().push(buf[..n].to_vec());
                        let _ = back.send_to(&buf[..n], controller);
                    }
                    while let Ok((n, _)) = back.recv_from(&mut buf) {
                        idle = false;
                        if let Some(p) = pipeline {
                            let _ = front.send_to(&buf[..n], p);
                        }
                    }
                    if idle {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            });
        }
        Proxy {
            addr,
            captured,
            toward_controller,
            controller,
            stop,
        }
    }

    /// Sends raw bytes to the controller as if from the pipeline's side of the link.
    pub fn inject(&self, datagram: &[u8]) {
        self.toward_controller.send_to(datagram, self.controller).unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

//! The WireGuard UDP socket: one socket for all peers, IPv4 and IPv6 underlay.
//!
//! Owns binding (dual-stack `[::]:port`, falling back to `0.0.0.0:port` when the host has no
//! IPv6), large kernel buffers, and the address conversions a dual-stack socket needs. Reading,
//! writing and batching are left to the driver.
//!
//! Why large buffers: on the baseline machine, a full UDP receive buffer (the default
//! 212,992 bytes) is what caps userspace WireGuard; every dropped datagram became a TCP
//! retransmit. wireguard-go asks for about 7 MiB (BENCHMARKS.md 3, "Interpretation").

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Receive and send buffer size we ask the kernel for (wireguard-go's value).
pub const SOCKET_BUFFER_BYTES: usize = 7 << 20;

/// Binds the WireGuard socket on `listen_port` (0 = any free port) for every interface.
///
/// Prefers one dual-stack IPv6 socket (`IPV6_V6ONLY` off) so IPv4 and IPv6 peers share it;
/// IPv4 sources then appear v4-mapped ([`normalize_addr`] undoes that) and IPv4 destinations
/// must be mapped ([`to_socket_family`]). Falls back to IPv4 only when IPv6 is unavailable.
/// Must be called inside a tokio runtime. Note that tokio's `try_send_to`/`try_io` report
/// `WouldBlock` until the reactor has observed writability once: await `writable()` after
/// binding (and after every `WouldBlock`) before relying on them.
pub fn bind_udp(listen_port: u16) -> io::Result<UdpSocket> {
    let socket = match bind(Domain::IPV6, listen_port) {
        Ok(s) => s,
        Err(e) if ipv6_unavailable(&e) => {
            tracing::info!(error = %e, "IPv6 unavailable; WireGuard socket is IPv4 only");
            bind(Domain::IPV4, listen_port)?
        }
        Err(e) => return Err(e),
    };
    grow_buffers(&socket);
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket.into())?;
    tracing::info!(local = ?socket.local_addr().ok(), "WireGuard UDP socket bound");
    Ok(socket)
}

/// Turns a v4-mapped IPv6 address (`[::ffff:a.b.c.d]:p`) into plain IPv4 (`a.b.c.d:p`), so
/// endpoints compare equal however they arrived and logs read naturally. Others unchanged.
pub fn normalize_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The address to pass to `send_to` on a socket of the given family: IPv4 destinations
/// become v4-mapped on an IPv6 socket. (An IPv6 destination on an IPv4-only socket cannot be
/// reached; it is returned unchanged and the send fails.)
pub fn to_socket_family(addr: SocketAddr, socket_is_ipv6: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if socket_is_ipv6 => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    }
}

fn bind(domain: Domain, port: u16) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let addr: SocketAddr = if domain == Domain::IPV6 {
        socket.set_only_v6(false)?;
        (Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, port).into()
    };
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The errors a host without IPv6 gives for an IPv6 socket or bind.
fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

/// Asks for [`SOCKET_BUFFER_BYTES`] in both directions, bypassing `net.core.{r,w}mem_max`
/// when privileged, and logs what the kernel granted. Failure only costs throughput.
fn grow_buffers(socket: &Socket) {
    let forced_rcv = force_buffer(socket, true);
    if !forced_rcv && let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(error = %e, "SO_RCVBUF not set");
    }
    let forced_snd = force_buffer(socket, false);
    if !forced_snd && let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(error = %e, "SO_SNDBUF not set");
    }
    let rcv = socket.recv_buffer_size().unwrap_or(0);
    let snd = socket.send_buffer_size().unwrap_or(0);
    tracing::info!(
        requested = SOCKET_BUFFER_BYTES,
        receive = rcv,
        send = snd,
        forced = forced_rcv && forced_snd,
        "WireGuard socket buffers"
    );
    // Linux reports twice the size granted; less than requested means rmem_max capped us.
    let granted = if cfg!(target_os = "linux") {
        rcv / 2
    } else {
        rcv
    };
    if granted < SOCKET_BUFFER_BYTES {
        tracing::warn!(
            granted,
            "UDP receive buffer smaller than requested; raise net.core.rmem_max \
             (or grant CAP_NET_ADMIN) for full throughput"
        );
    }
}

/// `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE` (Linux, needs CAP_NET_ADMIN). True if it worked.
#[cfg(target_os = "linux")]
fn force_buffer(socket: &Socket, receive: bool) -> bool {
    use std::os::fd::AsRawFd;
    let opt = if receive {
        libc::SO_RCVBUFFORCE
    } else {
        libc::SO_SNDBUFFORCE
    };
    let value = libc::c_int::try_from(SOCKET_BUFFER_BYTES).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the lifetime of `socket`; we pass a pointer to a live c_int
    // and its exact size, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn force_buffer(_socket: &Socket, _receive: bool) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    #[test]
    fn normalize_unmaps_v4_mapped_only() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:51820".parse().unwrap();
        assert_eq!(normalize_addr(mapped), "127.0.0.1:51820".parse().unwrap());
        let v6: SocketAddr = "[::1]:7".parse().unwrap();
        assert_eq!(normalize_addr(v6), v6);
        let v4: SocketAddr = "10.1.2.3:9".parse().unwrap();
        assert_eq!(normalize_addr(v4), v4);
    }

    #[test]
    fn to_socket_family_maps_v4_on_v6_sockets() {
        let v4: SocketAddr = "127.0.0.1:5".parse().unwrap();
        assert_eq!(
            to_socket_family(v4, true),
            "[::ffff:127.0.0.1]:5".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(to_socket_family(v4, false), v4);
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(to_socket_family(v6, true), v6);
        assert_eq!(normalize_addr(to_socket_family(v4, true)), v4);
    }

    /// Sends `payload` from `a` to `to` (given in plain form) and returns the normalised source
    /// as seen by `b`, plus the raw one.
    async fn exchange(
        a: &UdpSocket,
        b: &UdpSocket,
        to: SocketAddr,
        payload: &[u8],
    ) -> (SocketAddr, SocketAddr) {
        let a_v6 = a.local_addr().unwrap().is_ipv6();
        let sent = a
            .send_to(payload, to_socket_family(to, a_v6))
            .await
            .unwrap();
        assert_eq!(sent, payload.len());
        let mut buf = [0u8; 64];
        let (n, raw) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], payload);
        (normalize_addr(raw), raw)
    }

    #[tokio::test]
    async fn loopback_exchange_normalises_sources() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let a = bind_udp(0).unwrap();
            let b = bind_udp(0).unwrap();
            let a_port = a.local_addr().unwrap().port();
            let b_port = b.local_addr().unwrap().port();
            assert_ne!(a_port, 0);

            let (src, raw) = exchange(&a, &b, (Ipv4Addr::LOCALHOST, b_port).into(), b"hi").await;
            assert_eq!(src, SocketAddr::from((Ipv4Addr::LOCALHOST, a_port)));
            if b.local_addr().unwrap().is_ipv6() {
                // Dual-stack: the IPv4 source arrived v4-mapped, and normalising fixed it.
                assert_eq!(raw.ip(), IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()));

                // And plain IPv6 works on the same socket (if the host has ::1).
                let to = SocketAddr::from((Ipv6Addr::LOCALHOST, b_port));
                if a.send_to(b"v6", to).await.is_ok() {
                    let mut buf = [0u8; 8];
                    let (n, raw) = b.recv_from(&mut buf).await.unwrap();
                    assert_eq!(&buf[..n], b"v6");
                    assert_eq!(normalize_addr(raw), (Ipv6Addr::LOCALHOST, a_port).into());
                }
            }

            // The reply path: b answers the normalised address.
            let (src, _) = exchange(&b, &a, src, b"back").await;
            assert_eq!(src, SocketAddr::from((Ipv4Addr::LOCALHOST, b_port)));
        })
        .await
        .expect("test timed out");
    }

    /// A device's outputs straight onto a socket, as the driver does it.
    struct SocketOut<'a> {
        socket: &'a UdpSocket,
        delivered: Vec<Vec<u8>>,
    }

    impl SocketOut<'_> {
        fn take(&mut self, dev: &mut crate::wg::Device) {
            while let Some(output) = dev.poll_output() {
                match output {
                    crate::wg::Output::Transmit { to, datagram } => {
                        let v6 = self.socket.local_addr().unwrap().is_ipv6();
                        self.socket
                            .try_send_to(&datagram, to_socket_family(to, v6))
                            .unwrap();
                    }
                    crate::wg::Output::Deliver { packet, .. } => self.delivered.push(packet),
                    crate::wg::Output::Forward { .. } => unreachable!("unsharded"),
                }
            }
        }
    }

    /// Receives one datagram and hands it to the device with a normalised source.
    async fn step(dev: &mut crate::wg::Device, out: &mut SocketOut<'_>) {
        let mut buf = vec![0u8; 2048];
        let (n, src) = out.socket.recv_from(&mut buf).await.unwrap();
        dev.handle_datagram(normalize_addr(src), &buf[..n]);
        out.take(dev);
    }

    #[tokio::test]
    async fn two_devices_over_loopback_udp() {
        use crate::wg::device_tests::{ipv4, secret};
        use crate::wg::{Device, DeviceConfig, PeerConfig, PeerId, PublicKey};
        tokio::time::timeout(Duration::from_secs(10), async {
            let (sa, sb) = (bind_udp(0).unwrap(), bind_udp(0).unwrap());
            let a_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, sa.local_addr().unwrap().port()));
            let b_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, sb.local_addr().unwrap().port()));
            let (ka, kb) = (secret(), secret());
            let cfg = |me: &boringtun::x25519::StaticSecret, other, ip: &str, ep| DeviceConfig {
                private_key: me.clone(),
                peers: vec![PeerConfig {
                    name: None,
                    public_key: PublicKey::from(other),
                    preshared_key: None,
                    allowed_ips: vec![ip.parse().unwrap()],
                    endpoint: ep,
                    persistent_keepalive: None,
                }],
                handshake_rate_limit: crate::wg::DEFAULT_HANDSHAKE_RATE_LIMIT,
            };
            let mut a = Device::new(cfg(&ka, &kb, "10.0.0.2/32", Some(b_addr))).unwrap();
            let mut b = Device::new(cfg(&kb, &ka, "10.0.0.1/32", None)).unwrap();
            let mut out_a = SocketOut {
                socket: &sa,
                delivered: Vec::new(),
            };
            let mut out_b = SocketOut {
                socket: &sb,
                delivered: Vec::new(),
            };

            // tokio's try_* calls report WouldBlock until writability has been observed once.
            sa.writable().await.unwrap();
            sb.writable().await.unwrap();
            let p = ipv4("10.0.0.1", "10.0.0.2", b"through real sockets");
            a.send_ip_packet(&p); // initiation
            out_a.take(&mut a);
            step(&mut b, &mut out_b).await; // response
            step(&mut a, &mut out_a).await; // keepalive + the queued packet
            step(&mut b, &mut out_b).await;
            step(&mut b, &mut out_b).await;
            assert_eq!(out_b.delivered, vec![p]);
            // Endpoints are plain IPv4, so the configured one did not "roam" to a mapped form.
            assert_eq!(b.peer_endpoint(PeerId(0)), Some(a_addr));
            assert_eq!(a.peer_endpoint(PeerId(0)), Some(b_addr));
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn buffers_are_at_least_the_default() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let s = bind_udp(0).unwrap();
            let sock = socket2::SockRef::from(&s);
            // Whatever rmem_max allows, never less than what a plain socket gets.
            let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let plain = socket2::SockRef::from(&plain);
            assert!(sock.recv_buffer_size().unwrap() >= plain.recv_buffer_size().unwrap());
            assert!(sock.send_buffer_size().unwrap() >= plain.send_buffer_size().unwrap());
        })
        .await
        .expect("test timed out");
    }
}

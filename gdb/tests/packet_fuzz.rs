//! Malformed packets never take the replay server down: random bytes, bad checksums,
//! truncated and oversized packets, nonsense arguments, each on its own connection; then a
//! real gdb session still works.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// splitmix64, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A well-framed packet (`$body#checksum`), so the fuzz reaches the command parsers.
fn packet(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{sum:02x}").as_bytes());
    p
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Sends `bytes` on a fresh connection, half-closes, and drains the reply until the server
/// closes or goes quiet.
fn session(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the server stopped accepting");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // The server may close early on a fatal parse error; a write error then is expected.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn cases() -> Vec<Vec<u8>> {
    let mut cases: Vec<Vec<u8>> = vec![
        b"$g#00".to_vec(),    // bad checksum
        b"$g#zz".to_vec(),    // non-hex checksum
        b"$m1000,".to_vec(),  // truncated
        b"$m1000,4".to_vec(), // no checksum
        b"#00$".to_vec(),
        vec![0; 64],
        vec![0x03; 16], // interrupts while stopped
        b"$".repeat(1000),
        b"+-+-+-".to_vec(),
        packet(b"m1000,ffffffffffffffff"), // huge length
        packet(b"mffffffffffffffff,10"),   // wrapping address
        packet(b"m,"),
        packet(b"M1000,ffffffff:00"),
        packet(b"X1000,4:"),
        packet(b"p9999"),
        packet(b"pffffffffffffffffffff"),
        packet(b"P10=zz"),
        packet(b"P3c=00"),
        packet(b"G00"),
        packet(b"Z0,1000,1"),
        packet(b"Z1,ffffffffffffffff,99999999999999999999"),
        packet(b"z0,,"),
        packet(b"qXfer:features:read:target.xml:0,ffffffff"),
        packet(b"qXfer:features:read:target.xml:ffffffffffff,10"),
        packet(b"qXfer:features:read:other.xml:0,100"),
        packet(b"qRcmd,zz"),
        packet(format!("qRcmd,{}", hex("walk 0xffffffffffffffff v5.1-rc3")).as_bytes()),
        packet(format!("qRcmd,{}", hex("seek 99999999999999999999")).as_bytes()),
        packet(format!("qRcmd,{}", hex("goto-event 18446744073709551615")).as_bytes()),
        packet(format!("qRcmd,{}", hex("events 99999999")).as_bytes()),
        packet(format!("qRcmd,{}", hex(&"x".repeat(5000))).as_bytes()),
        packet(b"vCont;s"),
        packet(b"vCont;c"),
        packet(b"bc"),
        packet(b"bs"),
        packet(b"vCont;r0,ffffffffffffffff"),
        packet(b"QStartNoAckMode"),
        packet(b"qSupported:xmlRegisters=i386;multiprocess+;swbreak+;hwbreak+"),
        packet(&[b'q'; 20000]), // larger than the packet buffer
    ];
    let mut rng = Rng(0x6d6d_7572);
    for _ in 0..120 {
        let len = 1 + rng.below(300) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match rng.below(3) {
            // Raw noise.
            0 => {}
            // Noise framed as a packet with a valid checksum.
            1 => b = packet(&b),
            // A valid-looking command with a random tail.
            _ => {
                let heads: [&[u8]; 8] =
                    [b"m", b"M", b"X", b"p", b"P", b"Z0,", b"qRcmd,", b"vCont;"];
                let mut body = heads[rng.below(8) as usize].to_vec();
                body.extend(
                    b.iter()
                        .map(|c| b"0123456789abcdef,:;#$"[(*c % 21) as usize]),
                );
                b = packet(&body);
            }
        }
        cases.push(b);
    }
    cases
}

#[test]
fn malformed_packets_never_stop_the_server() {
    let gdb = common::gdb_binary(); // fail before the fuzz if gdb is missing
    drop(gdb);
    let port = common::start_replay_server(&common::seed_trace());
    for case in cases() {
        // Each case also begins with a handshake byte now and then, as gdb does.
        session(port, &case);
        let mut with_ack = b"+".to_vec();
        with_ack.extend_from_slice(&case);
        session(port, &with_ack);
    }
    let out = common::run_gdb(port, "p $cr0\nstepi\np $pc");
    common::expect(&out, "$1 = [ ET NW CD ]");
    common::expect(&out, "$2 = (void (*)()) 0x1001");
}

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
#[test]
#[ignore]
fn dump() {
    for s in guests::scenarios() {
        println!("== {} {:?}", s.name, s.needs);
        for (i, e) in s.expected.iter().enumerate() {
            println!("  {i}: {e:x?}");
        }
        println!("  findings {:?}", s.expected_findings);
        for l in &s.guest.loads {
            let b = &s.guest.blobs[l.blob as usize];
            println!("  blob {} @{:#x} len {:#x}", b.name, l.gpa, b.data.len());
            let bits = match b.name.as_str() {
                "real-mode code" => 16,
                "protected-mode code" => 32,
                "64-bit code" => 64,
                _ => continue,
            };
            if std::env::var("DIS").ok().as_deref() != Some(s.name) {
                continue;
            }
            let mut d = Decoder::with_ip(bits, &b.data, l.gpa, DecoderOptions::NONE);
            let mut f = IntelFormatter::new();
            for i in &mut d {
                let mut t = String::new();
                f.format(&i, &mut t);
                println!("    {:x} {}", i.ip(), t);
            }
        }
    }
}

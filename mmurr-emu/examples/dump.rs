fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mut r = traces::Reader::open(path).unwrap();
    let mut cur = traces::VcpuCursor::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let v = cur.observe(&rec);
        match &rec {
            traces::Record::Step(s) => println!(
                "v{v} step {} rip {:#x} regs {:x?} mem {:x?}",
                s.step,
                s.rip,
                s.regs,
                s.mem
                    .iter()
                    .map(|m| (m.gpa, m.data.clone()))
                    .collect::<Vec<_>>()
            ),
            traces::Record::Event(e) => println!("v{v}   event {} {:?}", e.id, e.kind.name()),
            traces::Record::Vcpu(s) => println!("switch {:?}", s),
            traces::Record::Keyframe(k) => {
                for p in &k.pages {
                    if p.gpa == 0x51000 || p.gpa == 0x54000 {
                        let a: Vec<(usize, u8)> = p
                            .data
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| **b & 0x60 != 0)
                            .map(|(i, b)| (i, *b))
                            .collect();
                        println!("keyframe {} page {:#x} A/D bytes {:x?}", k.step, p.gpa, a);
                    }
                }
            }
            _ => {}
        }
    }
}

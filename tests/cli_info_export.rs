//! `mmurr info` and `mmurr export` on the golden traces, on a truncated copy and on a file
//! that is not a trace, through the real binary.

mod common;
use common::mmurr_here as mmurr;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("traces/corpus")
        .join(format!("{name}.mmurr"))
}

fn ok_stdout(args: &[&str]) -> String {
    let out = mmurr(args);
    assert!(
        out.status.success(),
        "mmurr {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn info_json(path: &Path) -> Value {
    serde_json::from_str(&ok_stdout(&["info", path.to_str().unwrap(), "--json"])).expect("json")
}

#[test]
fn info_json_reports_header_and_counts() {
    let v = info_json(&golden("pae-toggle"));
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["backend"], "emu");
    assert_eq!(v["scenario"], "pae-toggle");
    assert_eq!(v["steps"], 600);
    assert_eq!(v["complete"], true);
    assert_eq!(v["recovery"], Value::Null);
    assert_eq!(v["chunks"], 5);
    let policies: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        policies,
        [
            "v5.0",
            "v5.1-rc3 (47c42e6b4192)",
            "v5.1 (cr4_pae fix)",
            "upstream"
        ]
    );
    let e = &v["events"];
    assert_eq!(e["total"], 86);
    assert_eq!(e["cr4"], 3);
    assert_eq!(e["transitions"], 5);
    assert_eq!(e["resets"], 24);
    for key in ["cr0", "cr3", "efer", "xcr0", "io"] {
        assert!(e[key].is_u64(), "events.{key} missing");
    }
    let writes: u64 = ["cr0", "cr3", "cr4", "efer", "xcr0"]
        .iter()
        .map(|k| e[*k].as_u64().unwrap())
        .sum();
    assert_eq!(writes, 15, "one CR/EFER/XCR0 write every 40 steps");
    assert_eq!(v["findings"], 2);
    assert_eq!(v["end"]["reason"], "debug-exit");
    assert_eq!(v["end"]["status"], 0);
}

#[test]
fn info_human_form() {
    let text = ok_stdout(&["info", golden("long-mode").to_str().unwrap()]);
    for needle in [
        "format version 1",
        "complete",
        "emu (unicorn 2.1.3)",
        "AMD EPYC (synthetic)",
        "scenario long-mode",
        "16 MiB RAM",
        "[1] v5.1-rc3 (47c42e6b4192)",
        "steps       300",
        "transition 4",
        "stale-context 2",
        "debug-exit (status 0) at step 300",
        "2025-11-24 16:00:00 UTC",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn info_reports_recovered_traces() {
    let v = info_json(&golden("killed"));
    assert_eq!(v["complete"], false);
    assert!(v["recovery"]["lost_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["end"], Value::Null);

    // A copy of a complete trace cut short, as a killed recorder would leave it.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(golden("pae-toggle")).unwrap();
    let cut = dir.path().join("cut.mmurr");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let v = info_json(&cut);
    assert_eq!(v["complete"], false);
    let rec = &v["recovery"];
    assert!(rec["chunks_kept"].as_u64().unwrap() >= 1);
    assert_eq!(
        rec["valid_bytes"].as_u64().unwrap() + rec["lost_bytes"].as_u64().unwrap(),
        (bytes.len() * 2 / 3) as u64
    );
    assert!(v["steps"].as_u64().unwrap() < 600);
    let text = ok_stdout(&["info", cut.to_str().unwrap()]);
    assert!(text.contains("INCOMPLETE"), "{text}");
    assert!(text.contains("lost the last"), "{text}");
}

#[test]
fn export_json_lines_one_per_event() {
    let text = ok_stdout(&[
        "export",
        golden("pae-toggle").to_str().unwrap(),
        "--format",
        "json",
    ]);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 86);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["id"], i as u64);
        assert!(l["step"].is_u64() && l["rip"].as_str().unwrap().starts_with("0x"));
    }
    let mmu = lines.iter().find(|l| l["kind"] == "mmu").unwrap();
    assert_eq!(mmu["policy"], "v5.0");
    assert_eq!(mmu["policy_index"], 0);
    for role in [
        "old_cpu_role",
        "new_cpu_role",
        "old_root_role",
        "new_root_role",
    ] {
        assert!(
            mmu[role].as_str().unwrap().starts_with("0x"),
            "{role}: {mmu}"
        );
    }
    let cause = mmu["cause"].as_u64().unwrap() as usize;
    assert!(lines[cause]["kind"]
        .as_str()
        .unwrap()
        .starts_with(['c', 'e', 'x']));
    let finding = lines.iter().find(|l| l["kind"] == "finding").unwrap();
    assert_eq!(finding["finding"], "stale-context");
    assert_eq!(finding["policy"], "v5.1-rc3 (47c42e6b4192)");
    assert_eq!(finding["translations"][0]["kept"]["phys"], "0x1000");
    let write = lines.iter().find(|l| l["kind"] == "cr4").unwrap();
    assert_eq!(write["reg"], "cr4");
    assert!(write["old"].as_str().unwrap().starts_with("0x"));
    let t = lines.iter().find(|l| l["kind"] == "transition").unwrap();
    assert_eq!(
        (t["from"].as_str(), t["to"].as_str()),
        (Some("real"), Some("unpaged"))
    );
}

#[test]
fn export_perfetto_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.json");
    let trace = golden("pae-toggle");
    ok_stdout(&[
        "export",
        trace.to_str().unwrap(),
        "--format",
        "perfetto",
        "-o",
        out.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("trace-event json");
    let events = v["traceEvents"].as_array().unwrap();
    let tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    for t in [
        "paging mode",
        "cr4 writes",
        "mmu: v5.0",
        "mmu: upstream",
        "findings",
    ] {
        assert!(tracks.contains(&t), "track {t} missing: {tracks:?}");
    }
    // Paging modes tile the whole run: 5 transitions -> 6 slices from step 0 to 600.
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), 6);
    assert_eq!(slices[0]["ts"], 0);
    assert_eq!(slices[0]["name"], "real");
    for pair in slices.windows(2) {
        let end = pair[0]["ts"].as_u64().unwrap() + pair[0]["dur"].as_u64().unwrap();
        assert_eq!(end, pair[1]["ts"].as_u64().unwrap());
    }
    // The last transition happens at the final step 600: its slice is drawn one step wide.
    let last = slices[5];
    assert_eq!(last["ts"], 600);
    assert_eq!(
        last["ts"].as_u64().unwrap() + last["dur"].as_u64().unwrap(),
        601
    );
    let instants: Vec<&Value> = events.iter().filter(|e| e["ph"] == "i").collect();
    assert!(instants
        .iter()
        .all(|e| e["ts"].is_u64() && e["tid"].is_u64()));
    let findings: Vec<&&Value> = instants.iter().filter(|e| e["tid"] == 2).collect();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0]["args"]["finding"], "stale-context");
    let resets = instants
        .iter()
        .filter(|e| e["name"] == "reinit" || e["name"] == "init without unload")
        .count();
    assert_eq!(resets, 24);
    assert_eq!(
        instants
            .iter()
            .filter(|e| e["args"]["kind"] == "cr4")
            .count(),
        3
    );
}

#[test]
fn export_of_a_recovered_trace_warns_and_exports_what_survived() {
    let out = mmurr(&["export", golden("killed").to_str().unwrap()]);
    // Exported, but a partial export must not pass for a whole one: exit 18.
    assert_eq!(out.status.code(), Some(18));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INCOMPLETE"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 40);
}

#[test]
fn non_trace_files_fail_clearly_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "these are not the bytes you are looking for\n").unwrap();
    for args in [
        vec!["info", junk.to_str().unwrap()],
        vec!["export", junk.to_str().unwrap(), "--format", "perfetto"],
    ] {
        let out = mmurr(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("mmurr: error: cannot read the trace"),
            "{stderr}"
        );
        assert!(stderr.contains("not an mmurr trace"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = mmurr(&["info", "/nonexistent/x.mmurr"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening /nonexistent/x.mmurr"));
}

//! Host truth end to end (issue 14's done-means), on this machine's KVM with its tracefs: the
//! seed of long-mode scenarios recorded with the host's own events; `mmurr check --host` exits
//! 0 and names the policies that agree with the host on every root; `--json` lists the host's
//! roots with their steps; the trace browser shows the host's root beside the model's decision.
//! SKIP lines where KVM or host events are not available (`MMURR_REQUIRE_KVM=1`,
//! `MMURR_REQUIRE_HOST_EVENTS=1` make them failures).

mod common;

use common::{mmurr, text};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use traces::{HostEventsStatus, Reader};

#[test]
fn check_host_names_the_agreeing_policies_and_the_browser_shows_the_host_root() {
    recorder::require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let rec = mmurr(
        &[
            "record",
            "--scenario",
            "long-mode-toggles",
            "--backend",
            "kvm",
            "--host-events",
            "-q",
            "-o",
            "t.mmurr",
        ],
        dir.path(),
    );
    assert_eq!(rec.status.code(), Some(1), "{}", text(&rec.stderr)); // debug-exit 0
    let trace = dir.path().join("t.mmurr");
    let host = Reader::open(&trace).unwrap().header().host.clone().unwrap();
    if let HostEventsStatus::Unavailable(why) = host.events {
        assert!(recorder::test_support::skip_without_host_events(Some(why)));
        return;
    }

    let out = mmurr(&["check", "t.mmurr", "--host"], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("This host behaved like"), "{stdout}");
    assert!(stdout.contains("v6.14"), "{stdout}");

    let out = mmurr(&["check", "t.mmurr", "--host", "--json"], dir.path());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let roots = json["roots"].as_array().unwrap();
    assert!(!roots.is_empty(), "{json}");
    assert!(roots.iter().all(|r| r["step"].is_u64()), "{json}");
    assert!(json["agreeing"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "v6.14"));

    let mut app = tui::app::App::open(&trace).unwrap();
    app.finish_loading();
    let mut t = Terminal::new(TestBackend::new(200, 60)).unwrap();
    t.draw(|f| tui::ui::draw(f, &app)).unwrap();
    let buf = t.backend().buffer().clone();
    let screen: String = (0..60)
        .map(|y| (0..200).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
        .collect();
    assert!(screen.contains("host KVM: root 0x"), "{screen}");
}

//! The real terminal: raw mode, the alternate screen and mouse capture, restored on every way
//! out (normal return, error, panic), and the event loop.

use crate::app::App;
use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{self, Stdout};
use std::path::Path;
use std::time::Duration;

/// How often to look at the loader while no key arrives.
const TICK: Duration = Duration::from_millis(50);

/// Puts the terminal back as the shell expects it. Safe to call more than once.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen);
    let _ = execute!(io::stdout(), crossterm::cursor::Show);
}

/// Owns the terminal's raw state; dropping it restores the terminal.
struct Session {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Session {
    fn start() -> anyhow::Result<Session> {
        // A panic message printed on the alternate screen in raw mode would be lost: restore
        // first, then let the default hook print it.
        // Only a panic of this (the drawing) thread ends the UI; the loader's panics end the
        // loader, which the UI reports.
        let ui_thread = std::thread::current().id();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == ui_thread {
                restore();
            }
            previous(info);
        }));
        enable_raw_mode()?;
        let session = execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)
            .map_err(anyhow::Error::from)
            .and_then(|_| Ok(Terminal::new(CrosstermBackend::new(io::stdout()))?));
        match session {
            Ok(terminal) => Ok(Session { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        restore();
    }
}

/// Opens the trace at `path` and browses it until the user quits (states inside runs are
/// rebuilt by the timeline's own re-execution: see `replayer::Timeline::set_reexecution`).
pub fn run(path: &Path) -> anyhow::Result<()> {
    // Open before touching the terminal, so a bad file is reported on a normal screen.
    let mut app = App::open(path)?;
    let mut session = Session::start()?;
    event_loop(&mut session.terminal, &mut app)
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
) -> anyhow::Result<()> {
    let mut dirty = true;
    let size = terminal.size()?;
    app.resize(size.width, size.height);
    loop {
        if dirty {
            terminal.draw(|f| crate::ui::draw(f, app))?;
            dirty = false;
        }
        if app.quit {
            return Ok(());
        }
        if event::poll(TICK)? {
            match event::read()? {
                Event::Key(k) => app.on_key(k),
                Event::Mouse(m) => app.on_mouse(m),
                Event::Resize(w, h) => {
                    app.resize(w, h);
                    terminal.autoresize()?
                }
                _ => {}
            }
            dirty = true;
        }
        if app.poll_loader() {
            dirty = true;
        }
    }
}

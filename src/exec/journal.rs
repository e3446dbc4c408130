//! `events.jsonl`: every state change of every run, appended and fsync'd by
//! one writer thread with group commit (all lines that arrived while the last
//! fsync ran are written, then synced once), so the runs never wait on a disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde_json::{Map, Value};

use crate::clock::Stamp;

enum Msg {
    Open(u64, PathBuf),
    Line(u64, Vec<u8>),
    /// Sync and close; answer with the first error seen on that file.
    Close(u64, tokio::sync::oneshot::Sender<Option<String>>),
}

/// The writer thread; cloneable handles append to it.
pub struct Journal {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// Appends to one run's `events.jsonl`.
#[derive(Clone)]
pub struct RunJournal {
    tx: mpsc::Sender<Msg>,
    key: u64,
}

impl Journal {
    pub fn start() -> Journal {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("flow-journal".into())
            .spawn(move || writer(rx))
            .ok();
        Journal { tx, thread }
    }

    /// Opens (creating or appending to) a run's journal.
    pub fn open(&self, key: u64, path: PathBuf) -> RunJournal {
        let _ = self.tx.send(Msg::Open(key, path));
        RunJournal {
            tx: self.tx.clone(),
            key,
        }
    }

    /// Waits for every line to be on disk.
    pub fn finish(mut self) {
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl RunJournal {
    /// Appends `{"wall_ns", "mono_ns", "event", …fields}`.
    pub fn event(&self, at: Stamp, event: &str, fields: Map<String, Value>) {
        let mut m = Map::with_capacity(fields.len() + 3);
        m.insert("wall_ns".into(), at.wall_ns.into());
        m.insert("mono_ns".into(), at.mono_ns.into());
        m.insert("event".into(), event.into());
        m.extend(fields);
        let mut line = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
        line.push(b'\n');
        let _ = self.tx.send(Msg::Line(self.key, line));
    }

    /// Syncs and closes the file; returns the first write error, if any.
    pub async fn close(self) -> Option<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Close(self.key, tx)).is_err() {
            return Some("the journal writer stopped".into());
        }
        rx.await
            .unwrap_or(Some("the journal writer stopped".into()))
    }
}

struct Open {
    file: Option<File>,
    path: PathBuf,
    error: Option<String>,
    dirty: bool,
}

fn writer(rx: mpsc::Receiver<Msg>) {
    let mut files: HashMap<u64, Open> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut closes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Open(key, path) => {
                    let (file, error) =
                        match OpenOptions::new().create(true).append(true).open(&path) {
                            Ok(f) => (Some(f), None),
                            Err(e) => {
                                (None, Some(format!("cannot open `{}`: {e}", path.display())))
                            }
                        };
                    files.insert(
                        key,
                        Open {
                            file,
                            path,
                            error,
                            dirty: false,
                        },
                    );
                }
                Msg::Line(key, line) => {
                    if let Some(o) = files.get_mut(&key)
                        && let Some(f) = &mut o.file
                    {
                        if let Err(e) = f.write_all(&line) {
                            o.error
                                .get_or_insert(format!("cannot write `{}`: {e}", o.path.display()));
                        }
                        o.dirty = true;
                    }
                }
                Msg::Close(key, ack) => closes.push((key, ack)),
            }
            next = rx.try_recv().ok();
        }
        for o in files.values_mut().filter(|o| o.dirty) {
            o.dirty = false;
            if let Some(f) = &o.file
                && let Err(e) = f.sync_data()
            {
                o.error
                    .get_or_insert(format!("cannot sync `{}`: {e}", o.path.display()));
            }
        }
        for (key, ack) in closes {
            let err = files.remove(&key).and_then(|o| o.error);
            let _ = ack.send(err);
        }
    }
    for o in files.values() {
        if let Some(f) = &o.file {
            let _ = f.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_arrive_in_order_and_are_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let j = Journal::start();
        let r = j.open(1, path.clone());
        for i in 0..100 {
            let mut f = Map::new();
            f.insert("i".into(), i.into());
            r.event(Stamp::now(), "tick", f);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(rt.block_on(r.close()), None);
        j.finish();
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[99]["i"], 99);
        assert_eq!(lines[0]["event"], "tick");
    }
}

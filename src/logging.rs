//! Log output that costs a request no system call and no thread wake-up: lines are appended to a
//! shared buffer, and a background thread writes whatever has gathered to stdout every 50 ms (in
//! one write). A buffer past 1 MiB is written at once by the thread that filled it, so memory
//! stays bounded under any load; nothing is dropped. Dropping the [`FlushGuard`] writes the rest.
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(50);
const MAX_PENDING: usize = 1 << 20;

struct Shared {
    buf: Mutex<(Vec<u8>, bool)>,
    stop: Condvar,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    /// Takes what has gathered and writes it. The sink is locked before the buffer is let go,
    /// so batches reach the sink in the order they were taken.
    fn drain(&self, mut buf: std::sync::MutexGuard<'_, (Vec<u8>, bool)>) {
        let mut out = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::mem::take(&mut buf.0);
        drop(buf);
        if !bytes.is_empty() {
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
    }
}

/// A `MakeWriter` for tracing-subscriber.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// Writes what is left, and stops the background thread, when dropped.
pub struct FlushGuard(Arc<Shared>, Option<std::thread::JoinHandle<()>>);

/// Starts the background writer to stdout.
pub fn batch_stdout() -> (BatchWriter, FlushGuard) {
    batch(Box::new(std::io::stdout()))
}

/// Starts the background writer to `sink`.
pub fn batch(sink: Box<dyn Write + Send>) -> (BatchWriter, FlushGuard) {
    let shared = Arc::new(Shared {
        buf: Mutex::new((Vec::new(), false)),
        stop: Condvar::new(),
        sink: Mutex::new(sink),
    });
    let bg = shared.clone();
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || loop {
            let guard = bg.buf.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = bg
                .stop
                .wait_timeout_while(guard, INTERVAL, |(_, stop)| !*stop)
                .unwrap_or_else(|e| e.into_inner());
            let stopping = guard.1;
            bg.drain(guard);
            if stopping {
                return;
            }
        })
        .expect("spawn the log writer");
    (BatchWriter(shared.clone()), FlushGuard(shared, Some(handle)))
}

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut guard = self.0.buf.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.extend_from_slice(data);
        if guard.0.len() > MAX_PENDING {
            self.0.drain(guard);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;
    fn make_writer(&'a self) -> BatchWriter {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.0.buf.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.0.stop.notify_all();
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let (w, guard) = batch(Box::new(sink.clone()));
        // four threads, and enough lines to pass the 1 MiB limit (written at once) as well
        std::thread::scope(|s| {
            for t in 0..4 {
                let mut w = w.clone();
                s.spawn(move || {
                    for i in 0..20_000 {
                        // tracing-subscriber hands over each event as one formatted line
                        w.write_all(format!("thread {t} line {i:08} {}\n", "x".repeat(20)).as_bytes())
                            .unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("thread {t} "))).collect();
            assert_eq!(lines.len(), 20_000);
            assert!(lines.windows(2).all(|p| p[0] < p[1]), "thread {t}'s lines out of order");
        }
    }
}

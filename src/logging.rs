//! Log output that costs a request no system call and no thread wake-up: lines are appended to a
//! shared buffer, and a background thread writes whatever has gathered to stdout every 50 ms (in
//! one write). A buffer past 1 MiB is written at once by the thread that filled it, so memory
//! stays bounded under any load; nothing is dropped. Dropping the [`FlushGuard`] writes the rest.
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

const INTERVAL: Duration = Duration::from_millis(50);
const MAX_PENDING: usize = 1 << 20;

struct Shared {
    /// the lines gathered so far, and whether to stop
    buf: Mutex<(Vec<u8>, bool)>,
    stop: Condvar,
    /// the sink, and the buffer written last (empty, its capacity kept for the next swap)
    sink: Mutex<(Box<dyn Write + Send>, Vec<u8>)>,
}

impl Shared {
    /// Takes what has gathered and writes it. The sink is locked before the buffer is let go,
    /// so batches reach the sink in the order they were taken. The two buffers trade places,
    /// so appending lines reallocates nothing once they have grown to a batch's size.
    fn drain(&self, mut buf: std::sync::MutexGuard<'_, (Vec<u8>, bool)>) {
        let mut out = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let (sink, bytes) = &mut *out;
        std::mem::swap(&mut buf.0, bytes);
        drop(buf);
        if !bytes.is_empty() {
            let _ = sink.write_all(bytes);
            let _ = sink.flush();
        }
        bytes.clear();
        // one very long line does not keep its memory
        if bytes.capacity() > 2 * MAX_PENDING {
            bytes.shrink_to(MAX_PENDING);
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
        sink: Mutex::new((sink, Vec::new())),
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

impl BatchWriter {
    /// Appends one whole line (or several) to the batch.
    fn append(&self, data: &[u8]) {
        let mut guard = self.0.buf.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.extend_from_slice(data);
        if guard.0.len() > MAX_PENDING {
            self.0.drain(guard);
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.append(data);
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

/// Where [`request`] writes its lines itself, when the text format without colours is on.
static REQUEST_LINES: std::sync::OnceLock<BatchWriter> = std::sync::OnceLock::new();

/// From now on [`request`] formats its line itself and appends it to `writer`, the same bytes
/// as `Line` writes for the `tracing::info!` event it stands for (a test compares them), without
/// tracing's dispatch, field visitor and `Debug` calls. Only for the subscriber that formats
/// with `Line` into `writer`: JSON and coloured logs keep the event.
pub fn write_request_lines(writer: BatchWriter) {
    let _ = REQUEST_LINES.set(writer);
}

/// Logs one answered request at INFO with target `layerscope::api`, as
/// `tracing::info!(request_id = %id, method = %method, path, status, micros, "request")` does;
/// the log filter (`LAYERSCOPE_LOG`) decides as it does for that event. Outside any span (the
/// direct line has no span prefix: this is called from the front layer, which enters none).
pub fn request(id: &str, method: &str, path: &str, status: u16, micros: u64) {
    if !tracing::enabled!(target: "layerscope::api", tracing::Level::INFO) {
        return;
    }
    let Some(writer) = REQUEST_LINES.get() else {
        tracing::info!(target: "layerscope::api", request_id = %id, method = %method, path, status, micros, "request");
        return;
    };
    thread_local! {
        static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    TEXT.with(|text| {
        let mut text = text.borrow_mut();
        text.clear();
        if request_line(&mut text, id, method, path, status, micros).is_ok() {
            writer.append(text.as_bytes());
        }
    });
}

/// `Line`'s text for the request event of [`request`]: `path` as its `Debug` (quoted, escaped;
/// written as it is where `Debug` would escape nothing), the numbers in decimal.
fn request_line(out: &mut String, id: &str, method: &str, path: &str, status: u16, micros: u64) -> fmt::Result {
    use fmt::Write as _;
    write_now(out)?;
    out.push_str(" INFO layerscope::api: request request_id=");
    out.push_str(id);
    out.push_str(" method=");
    out.push_str(method);
    out.push_str(" path=");
    if path.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(path);
        out.push('"');
    } else {
        write!(out, "{path:?}")?;
    }
    writeln!(out, " status={status} micros={micros}")
}

/// The text log line of tracing-subscriber's default format (without colours), written for
/// less: the same bytes as `tracing_subscriber::fmt()` writes (a test compares them), but the
/// date is formatted once a second per thread, and fields are written without the colour-style
/// calls the default visitor makes for every field even when colours are off. Every request
/// writes one such line, so its cost is a light request's cost (README, benchmarks).
pub struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &tracing::Event<'_>) -> fmt::Result {
        write_now(&mut w)?;
        let meta = event.metadata();
        w.write_str(match *meta.level() {
            tracing::Level::TRACE => "TRACE ",
            tracing::Level::DEBUG => "DEBUG ",
            tracing::Level::INFO => " INFO ",
            tracing::Level::WARN => " WARN ",
            tracing::Level::ERROR => "ERROR ",
        })?;
        // spans, outermost first, as the default format writes them: name{fields}:
        let mut spans = false;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                spans = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(w, "{{{fields}}}")?;
                    }
                }
                w.write_char(':')?;
            }
        }
        if spans {
            w.write_char(' ')?;
        }
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// The default visitor's output: the message first, then ` name=value` with the value's Debug.
struct Fields<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let pad = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.w, "{pad}{value:?}")
        } else {
            let name = field.name();
            write!(self.w, "{pad}{}={value:?}", name.strip_prefix("r#").unwrap_or(name))
        };
    }
}

impl tracing::field::Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.field(field, &format_args!("{value}"))
        } else {
            self.field(field, &value)
        }
    }

    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            Some(source) => {
                let name = field.name();
                self.field(field, &format_args!("{value} {name}.sources={}", Sources(source)))
            }
            None => self.field(field, &format_args!("{value}")),
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.field(field, value)
    }
}

/// An error's chain of sources, as `[first, second]`.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(e) = next {
            list.entry(&format_args!("{e}"));
            next = e.source();
        }
        list.finish()
    }
}

/// Writes the time now as `2026-12-07T13:47:55.123456Z ` (UTC, microseconds, then a space).
fn write_now(w: &mut impl fmt::Write) -> fmt::Result {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    thread_local! {
        /// The last second formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS.`
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (second, text) = &mut *cell;
        if *second != now.as_secs() {
            *second = now.as_secs();
            text.clear();
            let _ = write_second(text, now.as_secs());
        }
        w.write_str(text)?;
        write!(w, "{:06}Z ", now.subsec_micros())
    })
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch, in UTC (the `time` crate's calendar).
fn write_second(out: &mut impl fmt::Write, secs: u64) -> fmt::Result {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(fmt::Error)?;
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
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

    /// Events of every shape, logged by tracing-subscriber's default format and by `Line`.
    fn events() {
        #[derive(Debug)]
        struct Inner;
        impl fmt::Display for Inner {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("inner cause")
            }
        }
        impl std::error::Error for Inner {}
        #[derive(Debug)]
        struct Outer(Inner);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let id = "ls-1f-7".to_string();
        tracing::info!(request_id = %id, method = %"GET", path = "/healthz", status = 200u16, micros = 45u64, "request");
        tracing::warn!(error = %"accept failed: \"x\"", "accept failed");
        tracing::error!(panic = "boom\nline two", "handler panicked");
        tracing::info!("no fields at all");
        tracing::info!(r#type = 3i64, ok = true, ratio = 0.5f64, "raw name, bool, float");
        tracing::info!(addr = ?std::net::SocketAddr::from(([127, 0, 0, 1], 8080)), "debug value");
        tracing::warn!(target: "other::target", n = -4i64, "another target");
        tracing::error!(
            error = &Outer(Inner) as &(dyn std::error::Error + 'static),
            "an error with a source"
        );
        tracing::error!(error = &Inner as &(dyn std::error::Error + 'static));
        tracing::info!(message = "message as a field", after = 1u64);
        tracing::info!(x = 1u64);
        let span = tracing::info_span!("outer_span", job = 7u64);
        let _g = span.enter();
        let inner = tracing::info_span!("inner_span");
        let _h = inner.enter();
        tracing::info!(k = "v", "inside spans");
    }

    #[test]
    fn line_writes_what_the_default_format_writes() {
        let default = Sink::default();
        let line = Sink::default();
        let sink = default.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(sub, events);
        let sink = line.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(Line)
            .with_writer(move || sink.clone())
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let before = std::time::SystemTime::now();
        tracing::subscriber::with_default(sub, events);
        let after = std::time::SystemTime::now();
        let text = |s: &Sink| String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
        let (default, line) = (text(&default), text(&line));
        assert_eq!(default.lines().count(), 12, "{default}");
        assert_eq!(line.lines().count(), default.lines().count(), "{line}");
        for (d, l) in default.lines().zip(line.lines()) {
            // the times differ; everything after them is the same
            assert_eq!(d.split_once(' ').unwrap().1, l.split_once(' ').unwrap().1, "\n{d}\n{l}");
            let stamp = l.split_once(' ').unwrap().0;
            assert_eq!(stamp.len(), "2026-12-07T13:47:55.123456Z".len(), "{stamp}");
            let whole = |t: std::time::SystemTime| {
                let mut s = String::new();
                write_second(&mut s, t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();
                s
            };
            // the line's second is one of those the test ran in
            let second = &stamp[..20];
            assert!(second >= whole(before).as_str() && second <= whole(after).as_str(), "{stamp}");
        }
    }

    /// `request`'s own line is `Line`'s line for the event it stands for, byte for byte after
    /// the time, for 500 random requests (seeded): paths with quotes, backslashes, control
    /// characters and non-ASCII text (escaped by `Debug`), callers' ids, any method and status.
    #[test]
    fn request_lines_are_what_line_writes_for_the_event() {
        let mut rng = crate::analysis::rng::Rng::new(1408);
        let pieces = [
            "/v1/", "healthz", "\"", "\\", "\n", "\t", "\u{7f}", "é", "\u{202e}", "%20", "'", " ", "~", "\u{0}",
        ];
        let methods = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD", "PROPFIND"];
        let cases: Vec<(String, &str, String, u16, u64)> = (0..500)
            .map(|i| {
                let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
                let path: String = (0..pick(6)).map(|_| pieces[pick(pieces.len())]).collect();
                let id = if i % 2 == 0 {
                    format!("ls-{:x}-{}", pick(1 << 20), pick(1 << 30))
                } else {
                    "Ab-_.:9".repeat(1 + pick(18))
                };
                let micros = match i % 3 {
                    0 => pick(1000) as u64,
                    1 => u64::MAX - pick(3) as u64,
                    _ => (pick(usize::MAX) as u64) << 1,
                };
                (id, methods[pick(methods.len())], path, 100 + pick(500) as u16, micros)
            })
            .collect();
        let line = Sink::default();
        let sink = line.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(Line)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            for (id, method, path, status, micros) in &cases {
                tracing::info!(target: "layerscope::api", request_id = %id, method = %method, path = path.as_str(), status, micros, "request");
            }
        });
        let events = String::from_utf8(line.0.lock().unwrap().clone()).unwrap();
        assert_eq!(events.lines().count(), cases.len());
        let mut escaped = 0;
        for ((id, method, path, status, micros), event) in cases.iter().zip(events.split_inclusive('\n')) {
            let mut direct = String::new();
            request_line(&mut direct, id, method, path, *status, *micros).unwrap();
            assert_eq!(direct.split_once(' ').unwrap().1, event.split_once(' ').unwrap().1);
            assert_eq!(direct.split_once(' ').unwrap().0.len(), "2026-12-07T13:47:55.123456Z".len());
            escaped += usize::from(format!("{path:?}").len() != path.len() + 2);
        }
        // both branches of the path's writing were taken
        assert!(escaped > 100 && escaped < 400, "{escaped}");
    }

    #[test]
    fn dates_by_hand() {
        let at = |secs: u64| {
            let mut s = String::new();
            write_second(&mut s, secs).unwrap();
            s
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.");
        assert_eq!(at(59), "1970-01-01T00:00:59.");
        assert_eq!(at(86_399), "1970-01-01T23:59:59.");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00."); // a leap day of a 400-year leap year
        assert_eq!(at(951_868_800), "2000-03-01T00:00:00.");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00."); // 2100 has no 29 February
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.");
        assert_eq!(at(1_796_651_275), "2026-12-07T13:47:55.");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59.");
        // every day for 1,000 years: one day after the other, the calendar's own rules
        let mut prev = (1970i64, 1i64, 1i64);
        let month_days = |y: i64, m: i64| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for day in 1..365_250u64 {
            let s = at(day * 86_400 + 43_200);
            let (y, m, d) = (s[0..4].parse().unwrap(), s[5..7].parse().unwrap(), s[8..10].parse().unwrap());
            let expected = if prev.2 < month_days(prev.0, prev.1) {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {day}: {s}");
            assert_eq!(&s[10..], "T12:00:00.");
            prev = expected;
        }
    }
}

// Package accesslog owns sessiongate's access log: one line per request, in
// the combined log format (Apache's and nginx's, which goaccess and fail2ban
// read) or as one JSON object per line. The request path only formats the
// line into a pooled buffer and offers it to a bounded queue; one writer
// goroutine (Run) batches the queue into the file or stdout. When the disk
// cannot keep up the queue fills, and further lines are dropped and counted
// rather than making requests wait. Reopen starts a new file after logrotate
// has renamed the old one (SIGUSR1).
package accesslog

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Format is the line format.
type Format int

const (
	// Combined is the combined log format:
	// %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i".
	Combined Format = iota
	// JSON is one object per line with every field of Entry.
	JSON
)

// ParseFormat maps a config value ("combined" or "json") to a Format.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "combined":
		return Combined, nil
	case "json":
		return JSON, nil
	}
	return 0, fmt.Errorf("access log format %q: want combined or json", s)
}

// Entry is what one request leaves in the log. Strings are kept as they
// came; the formats escape them.
type Entry struct {
	Start    time.Time     // when the request arrived
	Duration time.Duration // until the response was complete
	Client   string        // the client's address, after trusted proxies
	Method   string
	Host     string
	URI      string // as requested (path and query)
	Proto    string // e.g. HTTP/1.1
	Status   int
	BytesIn  int64 // request body bytes read
	BytesOut int64 // response bytes written, headers excluded
	// Upstream is the time from sending the request to a backend to its
	// response headers (the last attempt); < 0 when no backend answered.
	Upstream time.Duration
	Backend  string // "" when none was reached
	Retries  int
	// Session is the session layer's outcome (verified, cached,
	// unknown_stripped, ...); "" without a session cookie or layer.
	Session string
	// SessionID is the verified session id. It is never written: the log
	// shows its hash (see IDHash), as sessiongate's other logs do.
	SessionID string
	RequestID string
	UserAgent string
	Referer   string
	TLS       uint16 // tls.VersionTLS12 etc.; 0 for plain HTTP
}

// Options configure a Logger.
type Options struct {
	Format Format
	// Queue is how many lines may wait for the writer; 0 means 4096.
	Queue int
	// FlushEvery bounds how long a written line may sit in the writer's
	// 64 KiB buffer; 0 means 200ms. (A full buffer is written at once.)
	FlushEvery time.Duration
	// Dropped, if set, is called for each line dropped because the queue
	// was full (e.g. to count it in a metric).
	Dropped func()
	// Logger reports write and reopen errors.
	Logger *slog.Logger
}

// Logger writes access log lines. Log is safe for concurrent use and never
// blocks; Run must be running for lines to be written.
type Logger struct {
	o       Options
	path    string // "" for a writer given to New: Reopen does nothing
	queue   chan *[]byte
	reopen  chan chan error
	bufs    sync.Pool
	dropped atomic.Uint64

	// Owned by Run's goroutine once it started.
	out  io.Writer
	file *os.File
}

const (
	defaultQueue      = 4096
	defaultFlushEvery = 200 * time.Millisecond
)

// New returns a Logger writing to w (typically os.Stdout).
func New(w io.Writer, o Options) *Logger {
	if o.Queue <= 0 {
		o.Queue = defaultQueue
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = defaultFlushEvery
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Logger{o: o, out: w, queue: make(chan *[]byte, o.Queue), reopen: make(chan chan error)}
	l.bufs.New = func() any { b := make([]byte, 0, 512); return &b }
	return l
}

// Open returns a Logger appending to the file at path, created if missing.
func Open(path string, o Options) (*Logger, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	l := New(f, o)
	l.path, l.file = path, f
	return l, nil
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// Dropped is how many lines were dropped because the queue was full.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Log formats e and queues it for the writer, or drops it when the queue
// is full.
func (l *Logger) Log(e Entry) {
	bp := l.bufs.Get().(*[]byte)
	if l.o.Format == JSON {
		*bp = appendJSON((*bp)[:0], &e)
	} else {
		*bp = appendCombined((*bp)[:0], &e)
	}
	select {
	case l.queue <- bp:
	default:
		l.dropped.Add(1)
		if l.o.Dropped != nil {
			l.o.Dropped()
		}
		l.put(bp)
	}
}

// put returns a line buffer to the pool, unless one huge line grew it.
func (l *Logger) put(bp *[]byte) {
	if cap(*bp) <= 16<<10 {
		l.bufs.Put(bp)
	}
}

// Reopen makes the writer finish the lines queued so far in the current
// file, close it and open path again (a new file after logrotate renamed
// the old one). It returns once lines logged afterwards go to the new
// file, or when ctx ends. A Logger from New has nothing to reopen.
func (l *Logger) Reopen(ctx context.Context) error {
	if l.path == "" {
		return nil
	}
	done := make(chan error, 1)
	select {
	case l.reopen <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run writes queued lines until ctx ends, then writes what is still queued,
// flushes, and closes the file (if Open made one).
func (l *Logger) Run(ctx context.Context) {
	bw := bufio.NewWriterSize(l.out, 64<<10)
	failing := false
	write := func(bp *[]byte) {
		if _, err := bw.Write(*bp); err != nil && !failing {
			failing = true // reported once until a write works again
			l.o.Logger.Error("access log write failed; lines are lost until it works again", "err", err)
		}
		l.put(bp)
	}
	flush := func() {
		if err := bw.Flush(); err != nil {
			if !failing {
				l.o.Logger.Error("access log write failed; lines are lost until it works again", "err", err)
			}
			failing = true
			bw.Reset(l.out) // drop the stuck bytes rather than retry them forever
			return
		}
		failing = false
	}
	// drain writes what is queued now, without waiting for more.
	drain := func() {
		for {
			select {
			case bp := <-l.queue:
				write(bp)
			default:
				return
			}
		}
	}
	defer func() {
		drain()
		flush()
		if l.file != nil {
			l.file.Close()
		}
	}()
	// Lines are written in batches, on the tick or when the buffer is
	// full: a write per line costs a busy proxy more than formatting does.
	tick := time.NewTicker(l.o.FlushEvery)
	defer tick.Stop()
	for {
		select {
		case bp := <-l.queue:
			write(bp)
		case <-tick.C:
			if bw.Buffered() > 0 {
				flush()
			}
		case done := <-l.reopen:
			drain()
			flush()
			f, err := openFile(l.path)
			if err != nil {
				l.o.Logger.Error("access log reopen failed; writing to the old file", "path", l.path, "err", err)
				done <- err
				continue
			}
			l.file.Close()
			l.file, l.out = f, f
			bw.Reset(f)
			done <- nil
		case <-ctx.Done():
			return
		}
	}
}

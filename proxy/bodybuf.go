package proxy

// Request body buffering, as nginx's proxy_request_buffering: the whole
// body is read from the client before a backend is picked, so a client that
// sends its body slowly holds a goroutine and a buffer here, never a PHP
// worker. Small bodies stay in memory; larger ones, or any once the memory
// shared by all requests is taken, go to a temp file. The backend then gets
// the body at loopback speed, with a Content-Length (a chunked request
// becomes a Content-Length one; php -S and PHP-FPM take both).

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
)

// BodyBufferOptions bound request body buffering. Bodies up to MemoryBytes
// are held in memory while MemoryTotal has room, others are written to a
// temp file in Dir while DiskTotal has room. A body beyond DiskBytes (or,
// when DiskBytes is 0, beyond MemoryBytes) is refused with 413; a body that
// finds the shared totals taken is refused with 503 and Retry-After: the
// request itself is fine, sessiongate is momentarily full.
type BodyBufferOptions struct {
	MemoryBytes int64  // per request, in memory
	MemoryTotal int64  // all requests together, in memory
	Dir         string // for temp files; "" = os.TempDir()
	DiskBytes   int64  // per request, on disk; 0 = never spill
	DiskTotal   int64  // all requests together, on disk
}

// CheckDir reports whether a temp file can be made in Dir, as bodies over
// MemoryBytes need (nil when DiskBytes is 0).
func (o BodyBufferOptions) CheckDir() error {
	if o.DiskBytes == 0 {
		return nil
	}
	f, err := os.CreateTemp(o.Dir, "sessiongate-body-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// bodyBuffers buffers request bodies within budgets shared by every
// request through one Proxy.
type bodyBuffers struct {
	o         BodyBufferOptions
	mem, disk budget
	bufs      *sync.Pool // *[]byte copy buffers, the Proxy's
	log       *slog.Logger
}

func newBodyBuffers(o BodyBufferOptions, bufs *sync.Pool, log *slog.Logger) *bodyBuffers {
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	bb := &bodyBuffers{o: o, bufs: bufs, log: log}
	bb.mem.limit, bb.disk.limit = o.MemoryTotal, o.DiskTotal
	return bb
}

// budget is a byte count shared by concurrent requests.
type budget struct {
	limit int64
	used  atomic.Int64
}

// take reserves n bytes, or reports false when they would exceed the limit.
func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *budget) give(n int64) { b.used.Add(-n) }

// errors that end buffering with a status of their own.
var (
	errBodyTooLarge = errors.New("request body larger than the buffering limit")
	errBuffersFull  = errors.New("request body buffers are full")
)

// buffer reads r's body whole and replaces it with the buffered copy, with
// ContentLength set and Transfer-Encoding, Trailer and Expect gone (the
// client got its 100 Continue from us). It returns the body, to release
// when the request is done (nil when there was none), or a status ≠ 0 when
// it answered (or, for 499, gave up on) the request itself; no backend is
// involved either way.
func (bb *bodyBuffers) buffer(w http.ResponseWriter, r *http.Request) (*bufferedBody, int) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, 0
	}
	b := &bufferedBody{bb: bb}
	if err := b.fill(r.Body, r.ContentLength); err != nil {
		b.release()
		return nil, bb.refuse(w, r, err)
	}
	r.ContentLength = b.n
	r.TransferEncoding = nil
	r.Trailer = nil
	delete(r.Header, "Expect")
	if b.n == 0 {
		r.Body, r.GetBody = http.NoBody, nil
	} else {
		if b.f != nil {
			b.at = b.f
		} else {
			b.at = bytes.NewReader(b.mem)
		}
		r.Body = b.reader()
		// GetBody lets the upstream client send the body again on a
		// keep-alive connection the backend had closed.
		r.GetBody = func() (io.ReadCloser, error) { return b.reader(), nil }
	}
	return b, 0
}

// refuse answers a request whose body could not be buffered and returns
// the status for metrics.
func (bb *bodyBuffers) refuse(w http.ResponseWriter, r *http.Request, err error) int {
	// The rest of the body may still be on its way: the connection cannot
	// carry another request.
	w.Header().Set("Connection", "close")
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.Is(err, errBodyTooLarge) || errors.As(err, &mbe):
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBuffersFull):
		bb.log.Warn("request body buffers full", "memory_used", bb.mem.used.Load(), "disk_used", bb.disk.used.Load(), "request_id", requestIDOf(r))
		w.Header().Set("Retry-After", "1")
		http.Error(w, "503 Service Unavailable: too many uploads in progress, please retry shortly.", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	case errors.As(err, &ne) && ne.Timeout():
		bb.log.Info("client sent its body too slowly", "status", http.StatusRequestTimeout, "path", r.URL.Path, "request_id", requestIDOf(r))
		http.Error(w, "request timeout", http.StatusRequestTimeout)
		return http.StatusRequestTimeout
	case errors.As(err, new(*os.PathError)) || errors.As(err, new(*os.LinkError)):
		bb.log.Error("request body buffering failed", "err", err, "request_id", requestIDOf(r))
		http.Error(w, "request body could not be buffered", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	default:
		// EOF before the end, a reset, a malformed chunk: the client broke
		// off its request, and nobody is left to read an answer.
		bb.log.Info("client gone while sending its body", "status", StatusClientClosed, "path", r.URL.Path, "err", err, "request_id", requestIDOf(r))
		return StatusClientClosed
	}
}

// bufferedBody is one request's body, in mem or, when it spilled, in f.
type bufferedBody struct {
	bb        *bodyBuffers
	mem       []byte
	f         *os.File
	at        io.ReaderAt // mem or f, once filled
	unlinked  bool
	n         int64
	memTaken  int64
	diskTaken int64
}

// fill reads src (of length size, or -1 if unknown) to its end.
func (b *bufferedBody) fill(src io.Reader, size int64) error {
	o := &b.bb.o
	limit := max(o.DiskBytes, o.MemoryBytes)
	if size > limit {
		return errBodyTooLarge
	}
	if size >= 0 && size <= o.MemoryBytes && b.bb.mem.take(size) {
		// The common case: one allocation of the declared size.
		b.memTaken = size
		b.mem = make([]byte, size)
		n, err := io.ReadFull(src, b.mem)
		b.n = int64(n)
		return unexpected(err)
	}
	if size < 0 {
		// Unknown length: memory first, growing while the budget allows.
		done, err := b.fillMemory(src)
		if done || err != nil {
			return err
		}
	}
	return b.fillDisk(src, size, limit)
}

// fillMemory reads src into memory up to MemoryBytes and reports whether
// it reached the end; when it did not, the bytes read so far stay in mem
// for fillDisk.
func (b *bufferedBody) fillMemory(src io.Reader) (bool, error) {
	o := &b.bb.o
	for {
		if len(b.mem) == cap(b.mem) {
			grow := min(max(int64(cap(b.mem)), 4<<10), o.MemoryBytes-int64(cap(b.mem)))
			if grow <= 0 || !b.bb.mem.take(grow) {
				return false, nil
			}
			b.memTaken += grow
			m := make([]byte, len(b.mem), int64(cap(b.mem))+grow)
			copy(m, b.mem)
			b.mem = m
		}
		n, err := src.Read(b.mem[len(b.mem):cap(b.mem)])
		b.mem = b.mem[:len(b.mem)+n]
		b.n += int64(n)
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// fillDisk moves what is in mem to a temp file and reads the rest of src
// there. With size known the whole of it is reserved at once, so that a
// request refused for room is refused before its body is read.
func (b *bufferedBody) fillDisk(src io.Reader, size, limit int64) error {
	bb := b.bb
	if bb.o.DiskBytes == 0 {
		// Memory only: the body did not fit, or the shared memory is taken.
		if size >= 0 && size <= bb.o.MemoryBytes || size < 0 && int64(cap(b.mem)) < bb.o.MemoryBytes {
			return errBuffersFull
		}
		return errBodyTooLarge
	}
	if size >= 0 {
		if !bb.disk.take(size) {
			return errBuffersFull
		}
		b.diskTaken = size
	}
	f, err := os.CreateTemp(bb.o.Dir, "sessiongate-body-*")
	if err != nil {
		return err
	}
	b.f = f
	// Unlinked at once: the open file still works, and nothing is left
	// behind whatever happens to the process.
	b.unlinked = os.Remove(f.Name()) == nil
	// What fillMemory read moves to the file; b.n counts the file's bytes.
	mem := b.mem
	b.n, b.mem = 0, nil
	if err := b.write(mem, size); err != nil {
		return err
	}
	bb.mem.give(b.memTaken)
	b.memTaken = 0
	bp := bb.bufs.Get().(*[]byte)
	defer bb.bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if b.n+int64(n) > limit {
				return errBodyTooLarge
			}
			if err := b.write(buf[:n], size); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			if size >= 0 && b.n != size {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// write appends p to the file, taking disk budget as it goes when the
// size was not reserved up front.
func (b *bufferedBody) write(p []byte, size int64) error {
	if len(p) == 0 {
		return nil
	}
	if size < 0 {
		if !b.bb.disk.take(int64(len(p))) {
			return errBuffersFull
		}
		b.diskTaken += int64(len(p))
	}
	n, err := b.f.Write(p)
	b.n += int64(n)
	return err
}

// reader returns the body from its start.
func (b *bufferedBody) reader() io.ReadCloser {
	r := &replay{}
	r.SectionReader = *io.NewSectionReader(b.at, 0, b.n)
	return r
}

// replay is one reading of a buffered body; closing it is a no-op, as the
// body lives until release.
type replay struct{ io.SectionReader }

func (*replay) Close() error { return nil }

// release frees the body's memory and file and returns their budget. The
// upstream client may still be reading from a goroutine of its own (a
// backend that answered before reading the body): the memory is never
// reused, so such a read sees the body or, from the closed file, an error.
func (b *bufferedBody) release() {
	if b == nil {
		return
	}
	if b.f != nil {
		b.f.Close()
		if !b.unlinked {
			os.Remove(b.f.Name())
		}
	}
	b.bb.mem.give(b.memTaken)
	b.bb.disk.give(b.diskTaken)
	b.memTaken, b.diskTaken = 0, 0
}

// unexpected maps a short read of a declared length to io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

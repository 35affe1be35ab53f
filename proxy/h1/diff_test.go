package h1

// Differential tests: every raw input is sent to an h1 Server and to
// net/http's http.Server (the oracle), both serving the same recording
// handler, and what each handler saw and what each client got back are
// compared. h1 fronts the internet, so it must never hand its handler a
// request net/http would have refused, nor read one differently.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The limits both servers run with in the differential tests.
const (
	diffMaxHeaderBytes = 8 << 10
	diffHeaderTimeout  = 2 * time.Second
	diffIdleTimeout    = 2 * time.Second
)

// exchangeTimeout bounds one connection: writing the input and reading
// everything the server sends until it closes.
const exchangeTimeout = 3 * time.Second

// maxOutput bounds what is read back from one connection.
const maxOutput = 32 << 20

// maxFuzzInput bounds fuzz inputs: enough to cross the header limit with
// net/http's 4 KiB of slack.
const maxFuzzInput = 20 << 10

// testLimits are the server settings a test chooses.
type testLimits struct {
	maxHeaderBytes int
	headerTimeout  time.Duration
	idleTimeout    time.Duration
}

// testServer is what the tests need of either server.
type testServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

func newH1(h http.Handler, lim testLimits) testServer {
	return &Server{Handler: h, MaxHeaderBytes: lim.maxHeaderBytes,
		ReadHeaderTimeout: lim.headerTimeout, IdleTimeout: lim.idleTimeout}
}

func newOracle(h http.Handler, lim testLimits) testServer {
	return &http.Server{Handler: h, MaxHeaderBytes: lim.maxHeaderBytes,
		ReadHeaderTimeout: lim.headerTimeout, IdleTimeout: lim.idleTimeout,
		ErrorLog: log.New(io.Discard, "", 0)}
}

// serverKind names a server constructor.
type serverKind struct {
	name string
	new  func(http.Handler, testLimits) testServer
}

// bothServers are the servers of tests that hold h1 to what net/http
// does (and so check themselves against net/http).
func bothServers() []serverKind { return []serverKind{{"net/http", newOracle}, {"h1", newH1}} }

// startServer serves srv on a free loopback port until the test ends. done is
// closed when Serve returns, with its error in *err.
func startServer(tb testing.TB, srv testServer) (addr string, done <-chan struct{}, err *error) {
	tb.Helper()
	l, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		tb.Fatal(lerr)
	}
	ch := make(chan struct{})
	var serveErr error
	go func() {
		defer close(ch)
		serveErr = srv.Serve(l)
	}()
	tb.Cleanup(func() {
		srv.Close()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			tb.Error("Serve did not return within 5s of Close")
		}
	})
	return l.Addr().String(), ch, &serveErr
}

// diffRecord is what the recording handler saw of one request.
type diffRecord struct {
	Method, RequestURI, URL, Host, Proto string
	ProtoMajor, ProtoMinor               int
	Header                               http.Header
	ContentLength                        int64
	TransferEncoding                     []string
	Body                                 string
	BodyErr                              bool // the servers' error texts differ; whether reading failed must not
	Trailer                              http.Header
}

// diffRecorder is the handler both servers serve: it records each request,
// keyed by the client's address, and answers by path (diffRespond).
type diffRecorder struct {
	mu      sync.Mutex
	records map[string][]diffRecord
	active  map[string]int
	changed chan struct{} // closed and replaced whenever a handler returns
}

func newDiffRecorder() *diffRecorder {
	return &diffRecorder{records: map[string][]diffRecord{}, active: map[string]int{}, changed: make(chan struct{})}
}

func (rc *diffRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.active[r.RemoteAddr]++
	rc.mu.Unlock()
	defer func() {
		rc.mu.Lock()
		rc.active[r.RemoteAddr]--
		close(rc.changed)
		rc.changed = make(chan struct{})
		rc.mu.Unlock()
	}()
	body, err := io.ReadAll(r.Body)
	rec := diffRecord{Method: r.Method, RequestURI: r.RequestURI, URL: r.URL.String(), Host: r.Host,
		Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Header: nilIfEmpty(r.Header.Clone()), ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, Body: string(body), BodyErr: err != nil,
		Trailer: nilIfEmpty(r.Trailer.Clone())}
	if len(rec.TransferEncoding) == 0 {
		rec.TransferEncoding = nil
	}
	rc.mu.Lock()
	rc.records[r.RemoteAddr] = append(rc.records[r.RemoteAddr], rec)
	rc.mu.Unlock()
	diffRespond(w, r)
}

// take returns and forgets the records of the connection from client,
// once none of its handlers is running (waiting at most a second: the
// server has closed the connection by then, so they should be done).
func (rc *diffRecorder) take(client string) ([]diffRecord, error) {
	deadline := time.NewTimer(time.Second)
	defer deadline.Stop()
	for {
		rc.mu.Lock()
		if rc.active[client] == 0 {
			recs := rc.records[client]
			delete(rc.records, client)
			delete(rc.active, client)
			rc.mu.Unlock()
			return recs, nil
		}
		changed := rc.changed
		rc.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return nil, fmt.Errorf("a handler for %s still runs 1s after the connection closed", client)
		}
	}
}

// diffRespond answers by path, so that every response framing is compared.
// Content-Type is always set: net/http would otherwise sniff one.
func diffRespond(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	switch r.URL.Path {
	case "/cl":
		h.Set("Content-Length", "6")
		io.WriteString(w, "hello\n")
	case "/nocl-small":
		io.WriteString(w, "small body\n")
	case "/nocl-big":
		w.Write(bytes.Repeat([]byte("0123456789abcdef"), 4<<10))
	case "/flush":
		io.WriteString(w, "first\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			io.WriteString(w, "flush: "+err.Error()+"\n")
		}
		io.WriteString(w, "second\n")
	case "/204":
		w.WriteHeader(http.StatusNoContent)
	case "/304":
		w.WriteHeader(http.StatusNotModified)
	case "/head-body":
		io.WriteString(w, "a body a HEAD request must not get\n")
	case "/close":
		h.Set("Connection", "close")
		io.WriteString(w, "bye\n")
	case "/trailer":
		h.Set("Trailer", "X-T")
		io.WriteString(w, "body before the trailer\n")
		h.Set("X-T", "trailer value")
	case "/late-header":
		io.WriteString(w, "body\n")
		h.Set("X-Late", "set after the body was written: not sent")
	case "/echo":
		// The request says what to answer, so that fuzzing reaches the
		// response side too: each X-Echo-Name header sets response header
		// Name, ?status= the status, ?body= the body.
		for k, vv := range r.Header {
			if name, ok := strings.CutPrefix(k, "X-Echo-"); ok {
				h[name] = slices.Clone(vv)
			}
		}
		q := r.URL.Query()
		if code, err := strconv.Atoi(q.Get("status")); err == nil {
			w.WriteHeader(code)
		}
		io.WriteString(w, q.Get("body"))
	case "/panic":
		panic(http.ErrAbortHandler)
	default:
		io.WriteString(w, "ok\n")
	}
}

// diffResponse is what the client got back for one response.
type diffResponse struct {
	Status           int
	Proto            string
	Header           http.Header // without Date
	ContentLength    int64
	TransferEncoding []string
	Close            bool
	Body             string
	BodyErr          bool
	Trailer          http.Header
}

func (r diffResponse) String() string {
	body := r.Body
	if len(body) > 80 {
		body = fmt.Sprintf("%s...(%d bytes)", body[:80], len(body))
	}
	return fmt.Sprintf("{%d %s %v CL=%d TE=%v close=%v body=%q bodyErr=%v trailer=%v}",
		r.Status, r.Proto, r.Header, r.ContentLength, r.TransferEncoding, r.Close, body, r.BodyErr, r.Trailer)
}

// diffExchange is one input's whole conversation with one server.
type diffExchange struct {
	records  []diffRecord
	resps    []diffResponse
	tail     string // why the bytes after the last response did not parse
	timedOut bool   // the server had not closed the connection after exchangeTimeout
}

// converse writes raw to a new connection to addr (writeSize bytes at a
// time; 0: at once), half-closes it and reads until the server closes it.
func converse(addr string, rc *diffRecorder, raw []byte, reqs []rawRequest, writeSize int) (diffExchange, error) {
	var ex diffExchange
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ex, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(exchangeTimeout))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for p := raw; len(p) > 0; {
			n := len(p)
			if writeSize > 0 {
				n = min(n, writeSize)
			}
			if _, err := c.Write(p[:n]); err != nil {
				return // the server closed early; it has said what it will say
			}
			p = p[n:]
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	out, err := io.ReadAll(io.LimitReader(c, maxOutput))
	<-wrote
	var ne net.Error
	ex.timedOut = errors.As(err, &ne) && ne.Timeout()
	if ex.records, err = rc.take(c.LocalAddr().String()); err != nil {
		return ex, err
	}
	// A refusal has a body even if it refuses a HEAD request.
	ex.resps, ex.tail = parseResponses(out, reqs[:readBefore(reqs, len(ex.records))])
	return ex, nil
}

// parseResponses reads the responses in out. The n-th final response
// answers the n-th request in reqs (so HEAD responses have no body);
// interim 1xx responses answer none.
func parseResponses(out []byte, reqs []rawRequest) ([]diffResponse, string) {
	br := bufio.NewReader(bytes.NewReader(out))
	var resps []diffResponse
	next := 0
	for len(resps) < 10000 {
		if _, err := br.Peek(1); err == io.EOF {
			return resps, ""
		}
		method := http.MethodGet
		if next < len(reqs) {
			method = reqs[next].method
		}
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return resps, err.Error()
		}
		body, err := io.ReadAll(res.Body)
		res.Header.Del("Date")
		resps = append(resps, diffResponse{Status: res.StatusCode, Proto: res.Proto, Header: nilIfEmpty(res.Header),
			ContentLength: res.ContentLength, TransferEncoding: res.TransferEncoding, Close: res.Close,
			Body: string(body), BodyErr: err != nil, Trailer: nilIfEmpty(res.Trailer)})
		if isFinal(res.StatusCode) {
			next++
		}
	}
	return resps, "too many responses"
}

func isFinal(status int) bool { return status >= 200 || status == http.StatusSwitchingProtocols }

func nilIfEmpty(h http.Header) http.Header {
	if len(h) == 0 {
		return nil
	}
	return h
}

// answered splits resps into the answers to the first k requests and
// the rest (refusals).
func answered(resps []diffResponse, k int) (handled, rest []diffResponse) {
	finals := 0
	for i, r := range resps {
		if finals == k {
			return resps[:i], resps[i:]
		}
		if isFinal(r.Status) {
			finals++
		}
	}
	return resps, nil
}

// nthFinal returns the i-th final (non-1xx) response, or nil.
func nthFinal(resps []diffResponse, i int) *diffResponse {
	for j := range resps {
		if isFinal(resps[j].Status) {
			if i == 0 {
				return &resps[j]
			}
			i--
		}
	}
	return nil
}

// diffPair is an h1 Server and an http.Server with the same limits and
// handler, for the differential tests; fuzzing reuses one pair.
type diffPair struct {
	oracle, h1       string // addresses
	oracleRec, h1Rec *diffRecorder
}

func newDiffPair(tb testing.TB) *diffPair {
	lim := testLimits{maxHeaderBytes: diffMaxHeaderBytes, headerTimeout: diffHeaderTimeout, idleTimeout: diffIdleTimeout}
	p := &diffPair{oracleRec: newDiffRecorder(), h1Rec: newDiffRecorder()}
	p.oracle, _, _ = startServer(tb, newOracle(p.oracleRec, lim))
	p.h1, _, _ = startServer(tb, newH1(p.h1Rec, lim))
	return p
}

// check sends raw to both servers at once and fails t where h1 disagrees
// with net/http beyond the deliberate differences (stricterOK); it logs
// the differences that are allowed.
func (p *diffPair) check(t testing.TB, raw []byte, writeSize int) {
	t.Helper()
	var want, got diffExchange
	var wantErr, gotErr error
	reqs := splitRequests(raw)
	var wg sync.WaitGroup
	wg.Go(func() { want, wantErr = converse(p.oracle, p.oracleRec, raw, reqs, writeSize) })
	wg.Go(func() { got, gotErr = converse(p.h1, p.h1Rec, raw, reqs, writeSize) })
	wg.Wait()
	if err := errors.Join(wantErr, gotErr); err != nil {
		t.Fatal(err)
	}
	problems, notes := compare(reqs, want, got)
	for _, n := range notes {
		t.Log(n)
	}
	if len(problems) > 0 {
		t.Errorf("input %q: h1 disagrees with net/http:\n  %s\nnet/http: %s\nh1:       %s",
			raw, strings.Join(problems, "\n  "), describe(want), describe(got))
	}
}

func describe(ex diffExchange) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d handled, timedOut=%v, tail=%q", len(ex.records), ex.timedOut, ex.tail)
	for _, r := range ex.records {
		fmt.Fprintf(&b, "\n    req %+v", r)
	}
	for _, r := range ex.resps {
		fmt.Fprintf(&b, "\n    res %v", r)
	}
	return b.String()
}

// compare applies the oracle rule to one input: h1's handler saw a prefix
// of what net/http's saw, identically, cut short only by a refusal in
// stricterOK; the responses to the requests both handled are identical;
// whatever else h1 sends is a 4xx/5xx refusal.
func compare(reqs []rawRequest, want, got diffExchange) (problems, notes []string) {
	if got.timedOut && !want.timedOut {
		problems = append(problems, fmt.Sprintf("h1 had not closed the connection after %v; net/http had", exchangeTimeout))
	}
	n := len(got.records)
	if n > len(want.records) {
		problems = append(problems, fmt.Sprintf("h1's handler saw %d requests, net/http's %d: h1 accepted what net/http refused", n, len(want.records)))
		n = len(want.records)
	}
	for i := range n {
		if !reflect.DeepEqual(got.records[i], want.records[i]) {
			problems = append(problems, fmt.Sprintf("request %d reads differently: %s", i, fieldDiff(want.records[i], got.records[i])))
			return problems, notes
		}
	}
	k := readBefore(reqs, n)
	// An "OPTIONS *" among those that h1 refused (a 4xx): h1 stopped
	// there. Where net/http answered it, the refusal must be one of the
	// deliberate ones; where net/http refused it too, only the refusals
	// are compared (below, as for any other request).
	refusedStar := false
	for i := range k {
		w, g := nthFinal(want.resps, i), nthFinal(got.resps, i)
		if reqs[i].star && g != nil && g.Status >= 400 {
			k, refusedStar = i, w == nil || w.Status < 400
			break
		}
	}
	if (n < len(want.records) || refusedStar) && len(problems) == 0 {
		why := ""
		if k < len(reqs) {
			why = stricterOK(reqs[k].head)
		}
		if why == "" && k > 0 {
			why = closesAfter(reqs[k-1].head)
		}
		if why == "" {
			problems = append(problems, fmt.Sprintf("h1 refused request %d, which net/http handled: %+v", n, want.records[n]))
		} else {
			notes = append(notes, fmt.Sprintf("h1 refused request %d (%s), as it may", n, why))
		}
	}
	wantHandled, wantRest := answered(want.resps, k)
	gotHandled, gotRest := answered(got.resps, k)
	for i := range max(len(wantHandled), len(gotHandled)) {
		if i >= len(wantHandled) && want.tail != "" {
			// net/http sent what does not parse (a handler's header can
			// do that): nothing more to hold h1 to.
			notes = append(notes, "net/http's response does not parse: "+want.tail)
			return problems, notes
		}
		if i >= len(wantHandled) || i >= len(gotHandled) {
			problems = append(problems, fmt.Sprintf("net/http sent %d responses to the first %d requests, h1 %d", len(wantHandled), k, len(gotHandled)))
			break
		}
		if d := fieldDiff(wantHandled[i], leeway(wantHandled[i], gotHandled[i])); d != "" {
			problems = append(problems, fmt.Sprintf("response %d differs: %s", i, d))
			break
		}
	}
	switch {
	case len(got.records) > len(want.records):
		return problems, notes // h1's rest answers what it should have refused
	case n < len(want.records) || refusedStar:
		wantRest = nil // net/http's answers to what h1 refused
	}
	for _, r := range gotRest {
		if r.Status < 400 || r.Status > 599 {
			problems = append(problems, fmt.Sprintf("h1 answered %d to a request its handler did not see", r.Status))
		}
	}
	switch {
	case len(gotRest) > 0 && len(wantRest) > 0:
		if gotRest[0].Status != wantRest[0].Status {
			notes = append(notes, fmt.Sprintf("refusal status: net/http %d, h1 %d", wantRest[0].Status, gotRest[0].Status))
		}
	case len(wantRest) > 0:
		notes = append(notes, fmt.Sprintf("net/http refused with %d, h1 closed without an answer", wantRest[0].Status))
	case len(gotRest) > 0 && n == len(want.records):
		notes = append(notes, fmt.Sprintf("h1 refused with %d, net/http closed without an answer", gotRest[0].Status))
	}
	if got.tail != "" && want.tail == "" {
		problems = append(problems, "h1 sent bytes that do not parse as a response: "+got.tail)
	}
	return problems, notes
}

// leeway returns got with the two response differences h1 may make
// undone: it may close a connection net/http keeps (never keep one
// net/http closes), and it may frame the same body differently, e.g.
// with a Content-Length where a handler set an invalid one and net/http
// falls back to chunks.
func leeway(want, got diffResponse) diffResponse {
	if got.Close && !want.Close {
		got.Close = false
		got.Header = got.Header.Clone()
		if hasClose := got.Header.Get("Connection") == "close"; hasClose && want.Header.Get("Connection") == "" {
			got.Header.Del("Connection")
		}
		// To HTTP/1.0 the close is the keep-alive not said.
		if want.Header.Get("Connection") == "keep-alive" && got.Header.Get("Connection") == "" {
			got.Header.Set("Connection", "keep-alive")
		}
		if len(got.Header) == 0 {
			got.Header = nil
		}
	}
	if got.Body == want.Body && got.BodyErr == want.BodyErr {
		got.ContentLength, got.TransferEncoding = want.ContentLength, want.TransferEncoding
		got.Header = got.Header.Clone()
		if v, ok := want.Header["Content-Length"]; ok {
			got.Header["Content-Length"] = v
		} else {
			got.Header.Del("Content-Length")
		}
		if len(got.Header) == 0 {
			got.Header = nil
		}
	}
	return got
}

// readBefore returns how many of reqs come before the n-th one that
// reaches the handler: the n handled, and any "OPTIONS *" in between.
func readBefore(reqs []rawRequest, n int) int {
	for i, seen := 0, 0; i < len(reqs); i++ {
		if reqs[i].star {
			continue
		}
		if seen == n {
			return i
		}
		seen++
	}
	return len(reqs)
}

// fieldDiff lists the fields in which two structs of the same type differ.
func fieldDiff(want, got any) string {
	w, g := reflect.ValueOf(want), reflect.ValueOf(got)
	var diffs []string
	for i := range w.NumField() {
		wf, gf := w.Field(i).Interface(), g.Field(i).Interface()
		if !reflect.DeepEqual(wf, gf) {
			diffs = append(diffs, fmt.Sprintf("%s: net/http %s, h1 %s", w.Type().Field(i).Name, short(wf), short(gf)))
		}
	}
	return strings.Join(diffs, "; ")
}

func short(v any) string {
	s := fmt.Sprintf("%#v", v)
	if len(s) > 300 {
		s = fmt.Sprintf("%s...(%d bytes)", s[:300], len(s))
	}
	return s
}

// answersItself reports whether net/http's server answers req itself:
// "OPTIONS *" that passes the server's checks on version, Host, header
// names and Expect (ReadRequest has made the others).
func answersItself(req *http.Request, head []byte) bool {
	if req.Method != http.MethodOptions || req.RequestURI != "*" || req.ProtoMajor != 1 {
		return false
	}
	if req.ProtoMinor > 0 && headerFields(head)["host"] == 0 {
		return false
	}
	if !onlyBytes(req.Host, "!$%&'()*+,-.:;=[]_~", true) {
		return false
	}
	for k := range req.Header {
		if k == "" || !onlyBytes(k, "!#$%&'*+-.^_`|~", false) {
			return false
		}
	}
	ex := strings.ToLower(req.Header.Get("Expect"))
	return ex == "" || strings.Contains(ex, "100-continue")
}

// onlyBytes reports whether s holds only ASCII letters, digits, bytes
// from extra and, if high, bytes from 0x80 up.
func onlyBytes(s, extra string, high bool) bool {
	for _, b := range []byte(s) {
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
			strings.IndexByte(extra, b) >= 0 || high && b >= 0x80) {
			return false
		}
	}
	return true
}

// rawRequest is one request in an input as net/http's server reads it.
type rawRequest struct {
	method string
	star   bool   // "OPTIONS *", which net/http answers without the handler
	head   []byte // request line and header
}

// splitRequests splits raw as net/http's server reads it (skipping CR and
// LF after a POST), up to the first request it cannot read.
func splitRequests(raw []byte) []rawRequest {
	src := bytes.NewReader(raw)
	br := bufio.NewReader(src)
	pos := func() int { return len(raw) - src.Len() - br.Buffered() }
	var reqs []rawRequest
	for len(reqs) < 10000 {
		if len(reqs) > 0 && reqs[len(reqs)-1].method == http.MethodPost {
			peek, _ := br.Peek(4)
			br.Discard(len(peek) - len(bytes.TrimLeft(peek, "\r\n")))
		}
		begin := pos()
		req, err := http.ReadRequest(br)
		if err != nil {
			break
		}
		end := pos()
		head := raw[begin:end]
		reqs = append(reqs, rawRequest{method: req.Method, star: answersItself(req, head), head: head})
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			break
		}
	}
	return reqs
}

// stricterOK says why h1 may refuse a request, given its head, that
// net/http hands to its handler, or "" if it may not. Each case is a
// deliberate difference that only ever refuses more.
func stricterOK(head []byte) string {
	line, _, _ := bytes.Cut(head, []byte("\n"))
	method, rest, _ := strings.Cut(string(line), " ")
	target, _, _ := strings.Cut(rest, " ")
	fields := headerFields(head)
	switch {
	case fields["host"] == 1 && emptyHost(head):
		// http.ReadRequest, which h1 parses with, drops the Host header,
		// so an empty one cannot be told from a missing one (which
		// net/http refuses too); h1 refuses both (400).
		return "empty Host"
	case method == http.MethodConnect:
		// net/http leaves CONNECT to the handler; sessiongate tunnels
		// nothing, so its handler could only refuse it too (h1: 405).
		return "CONNECT"
	case !strings.HasPrefix(target, "/") && !(target == "*" && method == http.MethodOptions):
		// net/http takes the host of an absolute-form target and drops
		// the Host header unchecked; browsers send that form only to
		// forward proxies, which sessiongate is not. "*" is for OPTIONS.
		// h1 serves origin-form paths only (400).
		return "request target not a path"
	case bytes.HasPrefix(line, []byte("PRI * HTTP/2.0")):
		// net/http hands the HTTP/2 preface to the handler only so that
		// it can hijack the connection for h2c; h1 speaks no HTTP/2
		// (h1: 505).
		return "HTTP/2 preface"
	}
	return ""
}

// closesAfter says why h1 may close the connection after a request, given
// its head, where net/http reads another request from it, or "" if it may
// not. Closing only ever serves less.
func closesAfter(head []byte) string {
	line, _, _ := bytes.Cut(head, []byte("\n"))
	if bytes.HasSuffix(bytes.TrimSuffix(line, []byte("\r")), []byte(" HTTP/1.0")) && headerFields(head)["transfer-encoding"] > 0 {
		// RFC 9112 6.1: an HTTP/1.0 request with Transfer-Encoding closes
		// the connection. net/http ignores the field for HTTP/1.0 and
		// reads what a chunked-aware front end sent as body as a request.
		return "HTTP/1.0 with Transfer-Encoding"
	}
	return ""
}

// emptyHost reports whether head has a Host field with an empty value.
func emptyHost(head []byte) bool {
	for _, line := range strings.Split(string(head), "\n")[1:] {
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\r"), ":")
		if ok && strings.EqualFold(name, "host") && strings.TrimSpace(value) == "" {
			return true
		}
	}
	return false
}

// headerFields counts the header fields in head by lowercased name.
func headerFields(head []byte) map[string]int {
	fields := map[string]int{}
	lines := strings.Split(string(head), "\n")
	for _, line := range lines[min(1, len(lines)):] {
		name, _, ok := strings.Cut(strings.TrimSuffix(line, "\r"), ":")
		if ok {
			fields[strings.ToLower(name)]++
		}
	}
	return fields
}

// diffCase is one named raw input; writeSize 1 sends it a byte at a time.
type diffCase struct {
	name      string
	raw       string
	writeSize int
}

func diffCorpus() []diffCase {
	const host = "Host: example.com\r\n"
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\n" + host + "\r\n" }
	post := func(path, headers, body string) string {
		return "POST " + path + " HTTP/1.1\r\n" + host + headers + "\r\n" + body
	}
	te := func(v string) string {
		return post("/cl", "Transfer-Encoding: "+v+"\r\n", "5\r\nhello\r\n0\r\n\r\n") + get("/after")
	}
	cl := func(v string) string {
		return post("/cl", "Content-Length: "+v+"\r\n", "hello") + get("/after")
	}
	chunked := func(body string) string {
		return post("/cl", "Transfer-Encoding: chunked\r\n", body) + get("/after")
	}
	header := func(line string) string {
		return "GET /cl HTTP/1.1\r\n" + host + line + "\r\n\r\n" + get("/after")
	}
	echo := func(query, headers string) string {
		if headers != "" {
			headers += "\r\n"
		}
		return "GET /echo?" + query + " HTTP/1.1\r\n" + host + headers + "\r\n"
	}
	bigHeader := func(n int) string { return header("X-Big: " + strings.Repeat("b", n)) }
	pipelined := get("/cl") + get("/nocl-small") + get("/nocl-big")
	shapes := get("/flush") + get("/204") + get("/304") + "HEAD /head-body HTTP/1.1\r\n" + host + "\r\n" +
		"HEAD /nocl-big HTTP/1.1\r\n" + host + "\r\n" + get("/late-header") + get("/trailer") + get("/nocl-small") + get("/close") + get("/after-close")
	return []diffCase{
		{"simple GET", get("/cl"), 0},
		{"pipelined GETs", pipelined, 0},
		{"response shapes", shapes, 0},
		{"panic aborts the connection", get("/flush") + get("/panic") + get("/after-panic"), 0},
		{"HTTP/1.0", "GET /cl HTTP/1.0\r\n\r\nGET /after HTTP/1.0\r\n\r\n", 0},
		{"HTTP/1.0 keep-alive", "GET /cl HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" +
			"GET /nocl-small HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" +
			"GET /nocl-big HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /after HTTP/1.0\r\n\r\n", 0},
		{"Connection: close", "GET /cl HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n" + get("/after"), 0},
		{"POST with Content-Length", cl("5"), 0},
		{"chunked POST with extensions and trailers", post("/trailer", "Transfer-Encoding: chunked\r\nTrailer: X-Foo\r\n",
			"5;ext=1;q=\"x\"\r\nhello\r\n6 ; a=b\r\n world\r\n0;last\r\nX-Foo: bar\r\n\r\n") + get("/after"), 0},
		{"CL then TE", post("/cl", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n") + get("/smuggled"), 0},
		{"TE then CL", post("/cl", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n") + get("/smuggled"), 0},
		{"TE chunked, chunked", te("chunked, chunked"), 0},
		{"TE identity", te("identity"), 0},
		{"TE gzip, chunked", te("gzip, chunked"), 0},
		{"TE xchunked", te("xchunked"), 0},
		{"TE Chunked", te("Chunked"), 0},
		{"TE twice", post("/cl", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n") + get("/after"), 0},
		{"TE with HTTP/1.0", "POST /cl HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 0},
		{"TE with HTTP/1.0 keep-alive", "POST /cl HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"GET /smuggled HTTP/1.0\r\n\r\n", 0},
		{"TE with HTTP/1.0 keep-alive, byte by byte", "POST /cl HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"GET /smuggled HTTP/1.0\r\n\r\n", 1},
		{"TE with HTTP/1.0 keep-alive, bare LF", "POST /cl HTTP/1.0\nConnection: keep-alive\nX-A: 1\n transfer-encoding: folded\ntransfer-encoding: chunked\n\n" +
			"GET /smuggled HTTP/1.0\n\n", 0},
		{"HTTP/1.0 keep-alive, byte by byte", "GET /cl HTTP/1.0\r\nConnection: keep-alive\r\nX-Transfer-Encoding: x\r\n\r\n" +
			"GET /after HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /last HTTP/1.0\r\n\r\n", 1},
		{"HTTP/1.0 keep-alive, folded TE", "GET /cl HTTP/1.0\r\nConnection: keep-alive\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n" +
			"GET /after HTTP/1.0\r\n\r\n", 0},
		{"duplicate identical CL", post("/cl", "Content-Length: 5\r\nContent-Length: 5\r\n", "hello") + get("/after"), 0},
		{"differing CL", post("/cl", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!") + get("/after"), 0},
		{"CL list", cl("5, 5"), 0},
		{"CL +5", cl("+5"), 0},
		{"CL leading space", cl("  5"), 0},
		{"CL trailing space", cl("5 "), 0},
		{"CL 0x5", cl("0x5"), 0},
		{"CL beyond int64", cl("99999999999999999999"), 0},
		{"CL negative", cl("-5"), 0},
		{"CL empty", cl(""), 0},
		{"CL longer than body", post("/cl", "Content-Length: 10\r\n", "hello"), 0},
		{"chunked undeclared trailer", chunked("5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), 0},
		{"chunked declared trailer missing", post("/cl", "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n", "0\r\n\r\n") + get("/after"), 0},
		{"chunk size overflow", chunked("10000000000000005\r\nhello\r\n0\r\n\r\n"), 0},
		{"chunk size leading spaces", chunked("  5\r\nhello\r\n0\r\n\r\n"), 0},
		{"chunk size trailing spaces", chunked("5  \r\nhello\r\n0\r\n\r\n"), 0},
		{"chunk size bare LF", chunked("5\nhello\n0\n\n"), 0},
		{"chunk missing CRLF after data", chunked("5\r\nhelloX0\r\n\r\n"), 0},
		{"chunked body cut short", post("/cl", "Transfer-Encoding: chunked\r\n", "5\r\nhel"), 0},
		{"chunk size negative", chunked("-5\r\nhello\r\n0\r\n\r\n"), 0},
		{"bare LF line endings", "GET /cl HTTP/1.1\nHost: example.com\n\nGET /after HTTP/1.1\nHost: example.com\n\n", 0},
		{"mixed line endings", "GET /cl HTTP/1.1\r\nHost: example.com\nX-A: b\r\n\n" + get("/after"), 0},
		{"bare CR line endings", "GET /cl HTTP/1.1\rHost: example.com\r\r" + get("/after"), 0},
		{"space before colon", header("X-Foo : bar"), 0},
		{"space in header name", header("X Foo: bar"), 0},
		{"obs-fold", header("X-Foo: bar\r\n  folded"), 0},
		{"obs-fold first header", "GET /cl HTTP/1.1\r\n folded: x\r\n" + host + "\r\n", 0},
		{"NUL in header value", header("X-Foo: a\x00b"), 0},
		{"CR in header value", header("X-Foo: a\rb"), 0},
		{"DEL in header value", header("X-Foo: a\x7fb"), 0},
		{"high bytes in header value", header("X-Foo: caf\xc3\xa9 \xff"), 0},
		{"empty header name", header(": bar"), 0},
		{"header without colon", header("X-Foo bar"), 0},
		{"missing Host", "GET /cl HTTP/1.1\r\n\r\n", 0},
		{"empty Host", "GET /cl HTTP/1.1\r\nHost:\r\n\r\n" + get("/after"), 0},
		{"two Host headers", "GET /cl HTTP/1.1\r\n" + host + "Host: other\r\n\r\n", 0},
		{"malformed Host", "GET /cl HTTP/1.1\r\nHost: a b/c\r\n\r\n", 0},
		{"absolute-form with Host", "GET http://other/cl?q=1 HTTP/1.1\r\n" + host + "\r\n" + get("/after"), 0},
		{"absolute-form without Host", "GET http://other/cl HTTP/1.1\r\n\r\n" + get("/after"), 0},
		{"absolute-form with empty Host", "GET http://other/cl HTTP/1.1\r\nHost:\r\n\r\n" + get("/after"), 0},
		{"absolute-form with malformed Host", "GET http://other/cl HTTP/1.1\r\nHost: a b\r\n\r\n" + get("/after"), 0},
		{"absolute-form HTTP/1.0 without Host", "GET http://other/cl HTTP/1.0\r\n\r\n", 0},
		{"asterisk OPTIONS", "OPTIONS * HTTP/1.1\r\n" + host + "\r\n" + get("/after"), 0},
		{"opaque absolute URI", "GET mailto:a@b HTTP/1.1\r\n" + host + "\r\n" + get("/after"), 0},
		{"asterisk OPTIONS HTTP/0.0", "OPTIONS * HTTP/0.0\r\n\r\n", 0},
		{"asterisk OPTIONS without Host", "OPTIONS * HTTP/1.1\r\n\r\n", 0},
		// Found by FuzzDifferential: net/http answers these itself; h1
		// cannot tell an empty Host from a missing one and refuses.
		{"asterisk OPTIONS empty Host", "OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n", 0},
		{"asterisk OPTIONS empty Host, then more", "OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n" + get("/after"), 0},
		{"asterisk OPTIONS Expect", "OPTIONS * HTTP/1.1\r\n" + host + "Expect: x\r\n\r\n", 0},
		{"asterisk OPTIONS with body", "OPTIONS * HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhello" + get("/after"), 0},
		{"asterisk GET", "GET * HTTP/1.1\r\n" + host + "\r\n" + get("/after"), 0},
		{"CONNECT authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" + get("/after"), 0},
		{"PRI preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0},
		{"HTTP/1.2", "GET /cl HTTP/1.2\r\n" + host + "\r\n", 0},
		{"HTTP/2.0 request line", "GET /cl HTTP/2.0\r\n" + host + "\r\n", 0},
		{"HTTP/0.9", "GET /cl\r\n\r\n", 0},
		{"lowercase proto", "GET /cl http/1.1\r\n" + host + "\r\n", 0},
		{"lowercase method", "get /cl HTTP/1.1\r\n" + host + "\r\n", 0},
		{"method with invalid char", "G@T /cl HTTP/1.1\r\n" + host + "\r\n", 0},
		{"URI with space", "GET /a b HTTP/1.1\r\n" + host + "\r\n", 0},
		{"URI with tab", "GET /a\tb HTTP/1.1\r\n" + host + "\r\n", 0},
		{"double space in request line", "GET  /cl HTTP/1.1\r\n" + host + "\r\n", 0},
		{"request line trailing space", "GET /cl HTTP/1.1 \r\n" + host + "\r\n", 0},
		{"relative URI", "GET cl HTTP/1.1\r\n" + host + "\r\n", 0},
		{"URI with fragment and escapes", "GET /a%20b/%2e%2e/c?x=%zz#frag HTTP/1.1\r\n" + host + "\r\n", 0},
		{"9 KiB header", bigHeader(9 << 10), 0},
		{"13 KiB header", bigHeader(13 << 10), 0},
		{"Expect: 100-continue", post("/cl", "Expect: 100-continue\r\nContent-Length: 5\r\n", "hello") + get("/after"), 0},
		{"Expect: 100-continue no body", "GET /cl HTTP/1.1\r\n" + host + "Expect: 100-continue\r\n\r\n" + get("/after"), 0},
		{"Expect: other", post("/cl", "Expect: something\r\nContent-Length: 5\r\n", "hello") + get("/after"), 0},
		{"one byte at a time", pipelined + chunked("5;e\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), 1},
		{"header a byte at a time", bigHeader(2 << 10), 1},
		{"empty lines before the request", "\r\n\r\n" + get("/cl"), 0},
		{"CRLF after a POST body", cl("5")[:len(cl("5"))-len(get("/after"))] + "\r\n" + get("/after"), 0},
		{"two CRLF after a POST body", cl("5")[:len(cl("5"))-len(get("/after"))] + "\r\n\r\n" + get("/after"), 0},
		{"garbage after a complete request", get("/cl") + "xyzzy\r\n\r\n", 0},
		{"binary garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0},
		{"truncated headers", "GET /cl HTTP/1.1\r\nHost: exa", 0},
		{"echo status and headers", echo("status=201&body=made", "X-Echo-Location: /x\r\nX-Echo-Cache-Control: no-store") + get("/after"), 0},
		{"echo Content-Length too short", echo("body=hello", "X-Echo-Content-Length: 3") + get("/after"), 0},
		{"echo Content-Length too long", echo("body=hello", "X-Echo-Content-Length: 9") + get("/after"), 0},
		{"echo bad Content-Length", echo("body=hello", "X-Echo-Content-Length: x5") + get("/after"), 0},
		{"echo Transfer-Encoding identity", echo("body=hello", "X-Echo-Transfer-Encoding: identity") + get("/after"), 0},
		{"echo Transfer-Encoding chunked with length", echo("body=hello", "X-Echo-Transfer-Encoding: chunked\r\nX-Echo-Content-Length: 5") + get("/after"), 0},
		// A Transfer-Encoding other than identity voids the Content-Length as
		// framing, but not as the bound on the body: an HTTP/1.0 client gets
		// neither (no chunks: it cannot read them), a short body closes.
		{"echo Transfer-Encoding gzip with length HTTP/1.0", "GET /echo?body=hello HTTP/1.0\r\nX-Echo-Transfer-Encoding: gzip\r\nX-Echo-Content-Length: 5\r\n\r\n", 0},
		{"echo Transfer-Encoding gzip with length, short body", echo("body=hi", "X-Echo-Transfer-Encoding: gzip\r\nX-Echo-Content-Length: 5") + get("/after"), 0},
		{"echo HEAD Transfer-Encoding gzip with length", "HEAD /echo?body=hello HTTP/1.1\r\n" + host + "X-Echo-Transfer-Encoding: gzip\r\nX-Echo-Content-Length: 5\r\n\r\n" + get("/after"), 0},
		{"echo Connection close", echo("body=bye", "X-Echo-Connection: close") + get("/after"), 0},
		{"echo Connection keep-alive HTTP/1.0", "GET /echo?body=hi HTTP/1.0\r\nConnection: keep-alive\r\nX-Echo-Connection: keep-alive\r\n\r\n" + get("/after"), 0},
		{"echo 103 then 200", echo("status=103&body=x", "X-Echo-Link: </s.css>; rel=preload") + get("/after"), 0},
		{"echo 103 with Connection and a declared trailer", echo("status=103&body=x", "X-Echo-Connection: keep-alive\r\nX-Echo-Trailer: X-A\r\nX-Echo-X-A: 1") + get("/after"), 0},
		{"echo 101", echo("status=101", "X-Echo-Upgrade: websocket\r\nX-Echo-Connection: Upgrade") + get("/after"), 0},
		{"echo 205 with body", echo("status=205&body=x", "") + get("/after"), 0},
		{"echo 304 with length", echo("status=304&body=x", "X-Echo-Content-Length: 1") + get("/after"), 0},
		{"echo 999", echo("status=999&body=x", "") + get("/after"), 0},
		{"echo 1000", echo("status=1000&body=x", "") + get("/after"), 0},
		{"echo HEAD with length", "HEAD /echo?body=hello HTTP/1.1\r\n" + host + "X-Echo-Content-Length: 5\r\n\r\n" + get("/after"), 0},
		{"echo Trailer", echo("body=x", "X-Echo-Trailer: X-A") + get("/after"), 0},
		{"echo Date", echo("body=x", "X-Echo-Date: yesterday") + get("/after"), 0},
		{"echo invalid header name", "GET /echo?body=x HTTP/1.1\r\n" + host + "X-Echo-A@b: 1\r\n\r\n" + get("/after"), 0},
		{"Pragma no-cache", header("Pragma: no-cache"), 0},
		{"Cookie headers", header("Cookie: a=1\r\nCookie: b=2"), 0},
		{"Upgrade h2c", header("Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), 0},
	}
}

// TestDifferentialCorpus holds h1 to net/http on classic request-parsing
// and response-framing cases.
func TestDifferentialCorpus(t *testing.T) {
	p := newDiffPair(t)
	for _, c := range diffCorpus() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p.check(t, []byte(c.raw), c.writeSize)
		})
	}
}

// FuzzDifferential is TestDifferentialCorpus's rule on any input.
func FuzzDifferential(f *testing.F) {
	for _, c := range diffCorpus() {
		f.Add([]byte(c.raw), c.writeSize == 1)
	}
	p := newDiffPair(f)
	f.Fuzz(func(t *testing.T, raw []byte, byteByByte bool) {
		if len(raw) > maxFuzzInput {
			t.Skip("input beyond maxFuzzInput")
		}
		writeSize := 0
		if byteByByte {
			writeSize = 1
		}
		p.check(t, raw, writeSize)
	})
}

// TestShutdownDrainsAndClosesIdle: Shutdown closes an idle keep-alive
// connection at once, lets an in-flight request finish before it returns,
// and Serve then returns http.ErrServerClosed.
func TestShutdownDrainsAndClosesIdle(t *testing.T) {
	for _, s := range bothServers() {
		t.Run(s.name, func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/block" {
					close(entered)
					<-release
				}
				io.WriteString(w, "done\n")
			})
			srv := s.new(h, testLimits{headerTimeout: 5 * time.Second, idleTimeout: 30 * time.Second})
			addr, served, serveErr := startServer(t, srv)
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unblock)

			idle := dialServer(t, addr)
			idleBR := bufio.NewReader(idle)
			io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			readOK(t, idleBR, "done\n")

			busy := dialServer(t, addr)
			busyBR := bufio.NewReader(busy)
			io.WriteString(busy, "GET /block HTTP/1.1\r\nHost: a\r\n\r\n")
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("the handler was not called within 5s")
			}

			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				shut <- srv.Shutdown(ctx)
			}()
			if err := readEOF(idle, idleBR); err != nil {
				t.Fatalf("idle connection during Shutdown: %v", err)
			}
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
			default:
			}
			unblock()
			readOK(t, busyBR, "done\n")
			select {
			case err := <-shut:
				if err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Shutdown did not return within 5s of the last request finishing")
			}
			if err := readEOF(busy, busyBR); err != nil {
				t.Errorf("busy connection after Shutdown: %v", err)
			}
			select {
			case <-served:
				if !errors.Is(*serveErr, http.ErrServerClosed) {
					t.Errorf("Serve returned %v, want http.ErrServerClosed", *serveErr)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return within 5s of Shutdown")
			}
		})
	}
}

// TestTimeouts: an idle keep-alive connection is closed after
// IdleTimeout, and one that stops halfway through a header line after
// ReadHeaderTimeout, each with no response but a refusal.
func TestTimeouts(t *testing.T) {
	const short, long = 200 * time.Millisecond, 30 * time.Second
	for _, s := range bothServers() {
		t.Run(s.name+"/idle", func(t *testing.T) {
			t.Parallel()
			addr, _, _ := startServer(t, s.new(http.HandlerFunc(diffRespond), testLimits{headerTimeout: long, idleTimeout: short}))
			c := dialServer(t, addr)
			br := bufio.NewReader(c)
			io.WriteString(c, "GET /cl HTTP/1.1\r\nHost: a\r\n\r\n")
			readOK(t, br, "hello\n")
			assertClosedAfter(t, c, br, short)
		})
		t.Run(s.name+"/silent new connection", func(t *testing.T) {
			t.Parallel()
			// The first request's head is bounded by the header timeout
			// from the accept, not by the idle timeout.
			addr, _, _ := startServer(t, s.new(http.HandlerFunc(diffRespond), testLimits{headerTimeout: short, idleTimeout: long}))
			c := dialServer(t, addr)
			assertClosedAfter(t, c, bufio.NewReader(c), short)
		})
		t.Run(s.name+"/header", func(t *testing.T) {
			t.Parallel()
			addr, _, _ := startServer(t, s.new(http.HandlerFunc(diffRespond), testLimits{headerTimeout: short, idleTimeout: long}))
			c := dialServer(t, addr)
			io.WriteString(c, "GET /cl HTTP/1.1\r\nHost: exa")
			assertClosedAfter(t, c, bufio.NewReader(c), short)
		})
	}
}

// assertClosedAfter checks that the server closes the connection, with at
// most a 4xx/5xx answer, no sooner than half of d and within 5s.
func assertClosedAfter(t *testing.T, c net.Conn, br *bufio.Reader, d time.Duration) {
	t.Helper()
	t0 := time.Now()
	if res, err := http.ReadResponse(br, nil); err == nil {
		res.Body.Close()
		if res.StatusCode < 400 {
			t.Errorf("got %d before the close, want none or a refusal", res.StatusCode)
		}
	}
	err := readEOF(c, br)
	elapsed := time.Since(t0)
	switch {
	case err != nil:
		t.Errorf("%v (after %v)", err, elapsed)
	case elapsed < d/2:
		t.Errorf("closed after %v, sooner than the %v timeout", elapsed, d)
	}
}

func dialServer(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readOK reads one 200 response with the given body.
func readOK(t *testing.T, br *bufio.Reader, body string) {
	t.Helper()
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK || string(b) != body {
		t.Fatalf("got %d %q (%v), want 200 %q", res.StatusCode, b, err, body)
	}
}

// readEOF waits, at most 5s, for the server to close the connection
// without sending anything more.
func readEOF(c net.Conn, br *bufio.Reader) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(br)
	switch {
	case len(b) > 0:
		return fmt.Errorf("got %q, want the connection closed", b)
	case err != nil:
		return fmt.Errorf("want the connection closed: %v", err)
	}
	return nil
}

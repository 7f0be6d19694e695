package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEncodeCommand(t *testing.T) {
	got := string(encodeCommand("RPUSH", "logs:acme:app", "line one\r\nline two", ""))
	want := "*4\r\n$5\r\nRPUSH\r\n$13\r\nlogs:acme:app\r\n$18\r\nline one\r\nline two\r\n$0\r\n\r\n"
	if got != want {
		t.Fatalf("encodeCommand = %q, want %q", got, want)
	}
}

func TestReadReply(t *testing.T) {
	cases := []struct {
		name, wire string
		want       any
	}{
		{"simple string", "+PONG\r\n", "PONG"},
		{"error", "-WRONGPASS invalid username-password pair\r\n", redisError("WRONGPASS invalid username-password pair")},
		{"integer", ":42\r\n", int64(42)},
		{"negative integer", ":-1\r\n", int64(-1)},
		{"bulk string", "$5\r\nhello\r\n", "hello"},
		{"bulk string with CRLF inside", "$4\r\na\r\nb\r\n", "a\r\nb"},
		{"empty bulk string", "$0\r\n\r\n", ""},
		{"null bulk string", "$-1\r\n", nil},
		{"empty array", "*0\r\n", []any{}},
		{"null array", "*-1\r\n", nil},
		{"nested array", "*3\r\n$1\r\na\r\n:7\r\n*1\r\n$-1\r\n", []any{"a", int64(7), []any{nil}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bufio.NewReader(strings.NewReader(c.wire))
			got, err := readReply(r)
			if err != nil {
				t.Fatalf("readReply(%q): %v", c.wire, err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("readReply(%q) = %#v, want %#v", c.wire, got, c.want)
			}
			if r.Buffered() != 0 {
				t.Fatalf("readReply(%q) left %d bytes unread", c.wire, r.Buffered())
			}
		})
	}
}

func TestReadReplyRejectsMalformed(t *testing.T) {
	for _, wire := range []string{
		"",               // EOF
		"+OK\n",          // LF without CR
		"\r\n",           // no type
		"?what\r\n",      // unknown type
		":x\r\n",         // bad integer
		"$-2\r\n",        // bad bulk length
		"$3\r\nab\r\n",   // short bulk
		"$2\r\nabcd\r\n", // bulk not terminated by CRLF
		"*2\r\n:1\r\n",   // short array
		"*x\r\n",         // bad array length
	} {
		if got, err := readReply(bufio.NewReader(strings.NewReader(wire))); err == nil {
			t.Errorf("readReply(%q) = %#v, want an error", wire, got)
		}
	}
}

// A command encoded by the client reads back, through the same decoder, as its arguments.
func TestEncodeReadRoundTrip(t *testing.T) {
	args := []string{"SET", "k", "", "\x00binary\r\n"}
	got, err := readReply(bufio.NewReader(strings.NewReader(string(encodeCommand(args...)))))
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"SET", "k", "", "\x00binary\r\n"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip = %#v, want %#v", got, want)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func serve(s *server, method, path, body string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.handler().ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec
}

func TestUnreachableRedisIs503(t *testing.T) {
	s := &server{redis: redisConfig{Addr: closedAddr(t), Password: "s3cret"}, tenant: "acme"}
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"POST", "/logs/app", "hello"},
		{"GET", "/logs/app", ""},
	} {
		rec := serve(s, req.method, req.path, req.body)
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%s %s: status %d, want 503", req.method, req.path, rec.Code)
		}
		if !strings.Contains(rec.Body.String(), "refused") {
			t.Errorf("%s %s: body %q does not carry the error", req.method, req.path, rec.Body.String())
		}
	}
}

// A version unready by design fails its probe without asking Redis, and says so.
func TestUnreadyVersionFailsItsProbe(t *testing.T) {
	s := &server{redis: redisConfig{Addr: closedAddr(t)}, tenant: "acme", version: "1.1.0", unready: true}
	rec := serve(s, "GET", "/", "")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "1.1.0 is unready by design") {
		t.Errorf("probe: status %d, body %q", rec.Code, rec.Body.String())
	}
}

// A Redis that accepts the connection but never answers fails the probe after about a second.
func TestSilentRedisProbeTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn // kept open, unanswered, until the listener closes
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, conn)
		}
	}()
	s := &server{redis: redisConfig{Addr: l.Addr().String()}, tenant: "acme"}
	start := time.Now()
	rec := serve(s, "GET", "/", "")
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("probe took %v", elapsed)
	}
}

// fakeRedis is an in-process Redis knowing AUTH, PING, RPUSH and LRANGE key 0 -1.
type fakeRedis struct {
	password string
	mu       sync.Mutex
	lists    map[string][]string
}

func startFakeRedis(t *testing.T, password string) (*fakeRedis, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f := &fakeRedis{password: password, lists: map[string][]string{}}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(conn)
		}
	}()
	return f, l.Addr().String()
}

func (f *fakeRedis) serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	authed := f.password == ""
	for {
		req, err := readReply(r)
		if err != nil {
			return
		}
		var args []string
		for _, a := range req.([]any) {
			args = append(args, a.(string))
		}
		var out string
		switch {
		case args[0] == "AUTH" && len(args) == 2:
			if args[1] == f.password {
				authed, out = true, "+OK\r\n"
			} else {
				out = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
			}
		case !authed:
			out = "-NOAUTH Authentication required.\r\n"
		case args[0] == "PING":
			out = "+PONG\r\n"
		case args[0] == "RPUSH" && len(args) == 3:
			f.mu.Lock()
			f.lists[args[1]] = append(f.lists[args[1]], args[2])
			out = fmt.Sprintf(":%d\r\n", len(f.lists[args[1]]))
			f.mu.Unlock()
		case args[0] == "LRANGE" && len(args) == 4:
			f.mu.Lock()
			items := f.lists[args[1]]
			out = fmt.Sprintf("*%d\r\n", len(items))
			for _, it := range items {
				out += fmt.Sprintf("$%d\r\n%s\r\n", len(it), it)
			}
			f.mu.Unlock()
		default:
			out = "-ERR unknown command\r\n"
		}
		if _, err := conn.Write([]byte(out)); err != nil {
			return
		}
	}
}

func TestRoundTripThroughRedis(t *testing.T) {
	f, addr := startFakeRedis(t, "s3cret")
	s := &server{redis: redisConfig{Addr: addr, Password: "s3cret"}, tenant: "acme"}

	if rec := serve(s, "GET", "/", ""); rec.Code != http.StatusOK {
		t.Fatalf("GET /: status %d, body %q", rec.Code, rec.Body.String())
	}
	for i, record := range []string{`{"msg":"first"}`, "second\r\nline"} {
		rec := serve(s, "POST", "/logs/app", record)
		if rec.Code != http.StatusCreated {
			t.Fatalf("POST: status %d, body %q", rec.Code, rec.Body.String())
		}
		var stored struct{ Stored int }
		if err := json.Unmarshal(rec.Body.Bytes(), &stored); err != nil || stored.Stored != i+1 {
			t.Fatalf("POST: body %q, want stored %d (%v)", rec.Body.String(), i+1, err)
		}
	}
	rec := serve(s, "GET", "/logs/app", "")
	var records []string
	if err := json.Unmarshal(rec.Body.Bytes(), &records); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("GET /logs/app: status %d, body %q (%v)", rec.Code, rec.Body.String(), err)
	}
	if want := []string{`{"msg":"first"}`, "second\r\nline"}; !reflect.DeepEqual(records, want) {
		t.Fatalf("records = %q, want %q", records, want)
	}
	f.mu.Lock()
	_, ok := f.lists["logs:acme:app"]
	f.mu.Unlock()
	if !ok {
		t.Fatal("records not under the key logs:acme:app")
	}
	rec = serve(s, "GET", "/logs/empty", "")
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Fatalf("GET /logs/empty: status %d, body %q", rec.Code, rec.Body.String())
	}

	wrong := &server{redis: redisConfig{Addr: addr, Password: "wrong"}, tenant: "acme"}
	rec = serve(wrong, "GET", "/", "")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "WRONGPASS") {
		t.Fatalf("wrong password: status %d, body %q", rec.Code, rec.Body.String())
	}
	noAuth := &server{redis: redisConfig{Addr: addr}, tenant: "acme"}
	if rec := serve(noAuth, "GET", "/", ""); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("no password: status %d, want 503", rec.Code)
	}
}

func TestUnknownPathIs404(t *testing.T) {
	s := &server{redis: redisConfig{Addr: closedAddr(t)}, tenant: "acme"}
	if rec := serve(s, "GET", "/nope", ""); rec.Code != http.StatusNotFound {
		t.Fatalf("status %d, want 404", rec.Code)
	}
}

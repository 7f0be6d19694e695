// Command server is a test stand-in for the NeuralLog server image. It honours the part of the
// server's contract the operator writes into the pod: it listens on PORT (default 3030) and stores
// logs in Redis at REDIS_HOST:REDIS_PORT (default 6379), authenticating with REDIS_PASSWORD when
// that is set, under keys scoped by TENANT_ID.
//
//	GET  /             readiness and liveness: 200 when Redis answers PING within a second, else 503
//	POST /logs/{name}  appends the body to the list logs:{TENANT_ID}:{name}; 201 {"stored": n}
//	GET  /logs/{name}  200 with the list's records as a JSON array of strings
//
// Redis failures answer 503 with the error. It exits cleanly on SIGTERM.
//
// An image of a NeuralLog version (tools/images/standin-version.Containerfile) sets
// NEURALLOG_STANDIN_VERSION, which the probe's answer names, and may set
// NEURALLOG_STANDIN_UNREADY=true: a version broken by design, whose probe always answers 503.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	probeTimeout = time.Second
	logsTimeout  = 5 * time.Second
	maxRecord    = 1 << 20
)

type server struct {
	redis   redisConfig
	tenant  string
	version string
	unready bool
}

func main() {
	port := envOr("PORT", "3030")
	s := &server{
		redis: redisConfig{
			Addr:     net.JoinHostPort(os.Getenv("REDIS_HOST"), envOr("REDIS_PORT", "6379")),
			Password: os.Getenv("REDIS_PASSWORD"),
		},
		tenant:  os.Getenv("TENANT_ID"),
		version: envOr("NEURALLOG_STANDIN_VERSION", "unversioned"),
		unready: os.Getenv("NEURALLOG_STANDIN_UNREADY") == "true",
	}

	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           s.handler(),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("server stand-in %s for tenant %q listening on %s, Redis at %s (auth: %t, unready by design: %t)",
		s.version, s.tenant, srv.Addr, s.redis.Addr, s.redis.Password != "", s.unready)

	select {
	case err := <-errc:
		log.Fatalf("server stand-in: %v", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("server stand-in: shutdown: %v", err)
	}
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.probe)
	mux.HandleFunc("POST /logs/{name}", s.appendLog)
	mux.HandleFunc("GET /logs/{name}", s.readLogs)
	return mux
}

// probe answers 200 only when Redis answers PING (after AUTH) within probeTimeout.
func (s *server) probe(w http.ResponseWriter, r *http.Request) {
	if s.unready {
		http.Error(w, "version "+s.version+" is unready by design", http.StatusServiceUnavailable)
		return
	}
	reply, err := s.do(r.Context(), probeTimeout, "PING")
	if err == nil && reply != "PONG" {
		err = fmt.Errorf("redis: unexpected PING reply %v", reply)
	}
	if err != nil {
		s.unavailable(w, "PING", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok", s.version)
}

func (s *server) appendLog(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRecord))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply, err := s.do(r.Context(), logsTimeout, "RPUSH", s.key(r), string(body))
	n, ok := reply.(int64)
	if err == nil && !ok {
		err = fmt.Errorf("redis: unexpected RPUSH reply %v", reply)
	}
	if err != nil {
		s.unavailable(w, "RPUSH", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]int64{"stored": n})
}

func (s *server) readLogs(w http.ResponseWriter, r *http.Request) {
	reply, err := s.do(r.Context(), logsTimeout, "LRANGE", s.key(r), "0", "-1")
	items, ok := reply.([]any)
	if err == nil && !ok {
		err = fmt.Errorf("redis: unexpected LRANGE reply %v", reply)
	}
	if err != nil {
		s.unavailable(w, "LRANGE", err)
		return
	}
	records := make([]string, 0, len(items))
	for _, item := range items {
		record, ok := item.(string)
		if !ok {
			s.unavailable(w, "LRANGE", fmt.Errorf("redis: unexpected list item %v", item))
			return
		}
		records = append(records, record)
	}
	writeJSON(w, http.StatusOK, records)
}

func (s *server) key(r *http.Request) string {
	return "logs:" + s.tenant + ":" + r.PathValue("name")
}

// do runs one command on a fresh connection, dial and exchange each bounded by timeout.
func (s *server) do(ctx context.Context, timeout time.Duration, args ...string) (any, error) {
	cfg := s.redis
	cfg.Timeout = timeout
	conn, err := dialRedis(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.do(args...)
}

// unavailable logs a Redis failure and answers 503 with it.
func (s *server) unavailable(w http.ResponseWriter, command string, err error) {
	log.Printf("server stand-in: Redis %s at %s failed: %v", command, s.redis.Addr, err)
	http.Error(w, err.Error(), http.StatusServiceUnavailable)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// The Redis client: RESP2, enough for the stand-in. Commands go out as arrays of bulk strings;
// every reply type a Redis server sends is read back.

// redisError is an error reply ("-ERR ...") from the server.
type redisError string

func (e redisError) Error() string { return "redis: " + string(e) }

// maxBulk bounds the size of one bulk string accepted from the server (Redis's own limit).
const maxBulk = 512 << 20

// encodeCommand renders a command as a RESP array of bulk strings.
func encodeCommand(args ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return []byte(b.String())
}

// readReply reads one reply. Simple and bulk strings come back as string, integers as int64,
// arrays as []any, null bulk strings and null arrays as nil, and error replies as redisError
// values (not as the error result, which is kept for protocol and I/O failures).
func readReply(r *bufio.Reader) (any, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if line == "" {
		return nil, errors.New("redis: empty reply line")
	}
	kind, rest := line[0], line[1:]
	switch kind {
	case '+':
		return rest, nil
	case '-':
		return redisError(rest), nil
	case ':':
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redis: bad integer reply %q", rest)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 || n > maxBulk {
			return nil, fmt.Errorf("redis: bad bulk length %q", rest)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return nil, errors.New("redis: bulk string not terminated by CRLF")
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 {
			return nil, fmt.Errorf("redis: bad array length %q", rest)
		}
		if n == -1 {
			return nil, nil
		}
		items := make([]any, 0, min(n, 1024))
		for range n {
			item, err := readReply(r)
			if err != nil {
				return nil, err
			}
			items = append(items, item)
		}
		return items, nil
	default:
		return nil, fmt.Errorf("redis: unknown reply type %q", kind)
	}
}

// readLine reads a CRLF-terminated line and returns it without the CRLF.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return "", errors.New("redis: reply line not terminated by CRLF")
	}
	return line[:len(line)-2], nil
}

// redisConfig says where Redis is and how to authenticate.
type redisConfig struct {
	Addr     string
	Password string        // empty: no AUTH
	Timeout  time.Duration // bounds the dial and, separately, the whole exchange after it
}

// redisConn is one connection; it is not safe for concurrent use.
type redisConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialRedis connects and, when a password is set, authenticates. Every later read and write on
// the connection must finish within cfg.Timeout of the dial.
func dialRedis(ctx context.Context, cfg redisConfig) (*redisConn, error) {
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(cfg.Timeout)); err != nil {
		conn.Close()
		return nil, err
	}
	c := &redisConn{conn: conn, r: bufio.NewReader(conn)}
	if cfg.Password != "" {
		if _, err := c.do("AUTH", cfg.Password); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// do sends one command and reads its reply; an error reply is returned as a redisError error.
func (c *redisConn) do(args ...string) (any, error) {
	if _, err := c.conn.Write(encodeCommand(args...)); err != nil {
		return nil, err
	}
	reply, err := readReply(c.r)
	if err != nil {
		return nil, err
	}
	if e, ok := reply.(redisError); ok {
		return nil, e
	}
	return reply, nil
}

func (c *redisConn) Close() error { return c.conn.Close() }

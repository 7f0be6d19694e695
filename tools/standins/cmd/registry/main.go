// Command registry is a test stand-in for the NeuralLog registry image. It honours the part of the
// registry's contract the operator relies on: it listens on PORT (default 3031), answers the
// readiness and liveness probe GET /health with 200 {"status":"ok","tenant":TENANT_ID}, answers
// GET / with a short JSON description, 404 for anything else, and exits cleanly on SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	port := envOr("PORT", "3031")
	tenant := os.Getenv("TENANT_ID")

	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           newHandler(tenant),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("registry stand-in for tenant %q listening on %s", tenant, srv.Addr)

	select {
	case err := <-errc:
		log.Fatalf("registry stand-in: %v", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("registry stand-in: shutdown: %v", err)
	}
}

// newHandler answers GET (and HEAD) /health and /; anything else is 404, whatever the method.
func newHandler(tenant string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			switch r.URL.Path {
			case "/health":
				writeJSON(w, map[string]string{"status": "ok", "tenant": tenant})
				return
			case "/":
				writeJSON(w, map[string]any{"service": "neurallog-registry", "standIn": true, "tenant": tenant})
				return
			}
		}
		http.NotFound(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

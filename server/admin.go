package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// PathPprof is the prefix of the profiler's routes on the admin address.
const PathPprof = "/debug/pprof/"

// AdminHandler returns the handler of the admin address: GET /metrics
// and, with Config.AdminPprof, net/http/pprof under /debug/pprof/. Every
// other request gets a JSON error in the API's shape. It has no
// authentication: bind the admin address where only the monitoring system
// reaches it.
func (s *Server) AdminHandler() http.Handler { return s.adminH }

func (s *Server) newAdminHandler() http.Handler {
	var prof *http.ServeMux
	if s.adminPprof {
		prof = http.NewServeMux()
		prof.HandleFunc(PathPprof, pprof.Index)
		prof.HandleFunc(PathPprof+"cmdline", pprof.Cmdline)
		prof.HandleFunc(PathPprof+"profile", pprof.Profile)
		prof.HandleFunc(PathPprof+"symbol", pprof.Symbol)
		prof.HandleFunc(PathPprof+"trace", pprof.Trace)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"] = hdrNosniff
		h["Cache-Control"] = hdrNoStore
		rc := &reqCtx{id: requestID(r.Header.Get("X-Request-Id"))}
		h["X-Request-Id"] = []string{rc.id}
		switch {
		case r.URL.Path == PathMetrics && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			s.promH.ServeHTTP(w, r)
		case r.URL.Path == PathMetrics:
			e := newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed on this route; see the Allow header.")
			e.allow = "GET, HEAD"
			s.writeError(w, rc, e)
		case prof != nil && strings.HasPrefix(r.URL.Path, PathPprof):
			prof.ServeHTTP(w, r)
		default:
			s.writeError(w, rc, newError(http.StatusNotFound, CodeNotFound, "No such route."))
		}
	})
}

// RunAdmin serves AdminHandler on ln until ctx is cancelled, then closes
// it (a scrape in flight gets five seconds to finish).
func (s *Server) RunAdmin(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.adminH,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      2 * time.Minute, // a CPU profile or trace runs 30 s by default
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("admin listening", "addr", ln.Addr().String(), "pprof", s.adminPprof)
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if serr := hs.Shutdown(sctx); serr != nil {
			_ = hs.Close()
		}
		err = <-errc
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// listenAndServeWithAdmin is ListenAndServe with an admin address: both
// listeners open first (so a taken port fails the start), the admin
// address serves until the API has shut down, metrics included.
func (s *Server) listenAndServeWithAdmin(ctx context.Context) error {
	adminLn, err := net.Listen("tcp", s.adminAddr)
	if err != nil {
		return fmt.Errorf("server: admin listen: %w", err)
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		_ = adminLn.Close()
		return fmt.Errorf("server: listen: %w", err)
	}
	actx, stop := context.WithCancel(context.WithoutCancel(ctx))
	adminErr := make(chan error, 1)
	go func() { adminErr <- s.RunAdmin(actx, adminLn) }()
	err = s.Run(ctx, ln)
	stop()
	if aerr := <-adminErr; aerr != nil && err == nil {
		err = fmt.Errorf("server: admin: %w", aerr)
	}
	return err
}

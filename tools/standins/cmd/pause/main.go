// Command pause is a test stand-in for the Kubernetes sandbox ("pause") image: it holds the pod's
// namespaces by doing nothing until SIGTERM or SIGINT, then exits 0. Unlike the real pause it
// reaps no zombies; the stand-in pods' containers start none.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// As PID 1, a process gets no default signal handling, so the signals must be caught.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

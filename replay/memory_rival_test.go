package replay_test

import (
	"fmt"
	"testing"

	"github.com/wxphone/wxphone/internal/replaytest"
	"github.com/wxphone/wxphone/replay"
)

// TestMemoryRivals: see replaytest.CheckRivals.
func TestMemoryRivals(t *testing.T) {
	n := 0
	replaytest.CheckRivals(t, replay.NewMemory(), func() string { n++; return fmt.Sprintf("k%d", n) })
}

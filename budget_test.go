package wxphone

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/budget"
)

func TestForceRefreshRemaining(t *testing.T) {
	store := NewMemoryTokenStore()
	m, err := NewTokenManager(TokenConfig{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1:1", Token: TokenOptions{Store: store, ForceDailyBudget: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if n, err := m.ForceRefreshRemaining(ctx); n != 3 || err != nil || m.ForceDailyBudget() != 3 {
		t.Fatalf("fresh: %d, %v", n, err)
	}
	now := time.Now()
	for i := range 5 { // all at one instant (no spacing), so no midnight falls between them
		if ok, _, _ := store.ReserveForceRefresh(ctx, testAppID, "r"+string(rune('0'+i)), now, 0, 5); !ok {
			t.Fatal("reservation refused")
		}
	}
	if n, err := m.ForceRefreshRemaining(ctx); n != 0 || err != nil {
		t.Errorf("five reserved against a budget of three: %d, %v", n, err)
	}
	// Reading spends nothing; another app's budget is its own.
	if n, _ := store.ForceRefreshesOn(ctx, testAppID, now); n != 5 {
		t.Errorf("count %d", n)
	}
	if n, _ := store.ForceRefreshesOn(ctx, "wxother", now); n != 0 {
		t.Errorf("other app %d", n)
	}
	// Yesterday's reservations do not count today.
	if n, _ := store.ForceRefreshesOn(ctx, testAppID, budget.NextMidnight(now)); n != 0 {
		t.Errorf("next day %d", n)
	}

	m2, err := NewTokenManager(TokenConfig{AppID: testAppID, Secret: testSecret, BaseURL: "http://127.0.0.1:1", Token: TokenOptions{Store: storeOnly{store}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if _, err := m2.ForceRefreshRemaining(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("a store without ForceBudgetReader: %v", err)
	}
}

// storeOnly hides every method but TokenStore's.
type storeOnly struct{ TokenStore }

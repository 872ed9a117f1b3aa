package wxphone

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wxphone/wxphone/internal/budget"
)

// ForceBudgetReader is implemented by token stores that can report the
// force-refresh budget without spending it (MemoryTokenStore and the
// Redis store do), for metrics and alerts.
type ForceBudgetReader interface {
	// ForceRefreshesOn returns how many force refreshes were reserved for
	// appID on the WeChat day (UTC+8) of now.
	ForceRefreshesOn(ctx context.Context, appID string, now time.Time) (int, error)
}

// ForceRefreshesOn implements ForceBudgetReader.
func (s *MemoryTokenStore) ForceRefreshesOn(_ context.Context, appID string, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[appID]; a != nil && a.forceDay == budget.Day(now) {
		return a.forceCount, nil
	}
	return 0, nil
}

// ForceRefreshRemaining returns how many force refreshes the manager may
// still make today (WeChat's day, UTC+8): ForceDailyBudget less those
// reserved today through the store, which a fleet shares. It spends
// nothing. It returns an error matching errors.ErrUnsupported when the
// store does not implement ForceBudgetReader.
func (m *TokenManager) ForceRefreshRemaining(ctx context.Context) (int, error) {
	r, ok := m.opts.Store.(ForceBudgetReader)
	if !ok {
		return 0, fmt.Errorf("wxphone: the token store cannot report the force-refresh budget: %w", errors.ErrUnsupported)
	}
	n, err := r.ForceRefreshesOn(ctx, m.appID, time.Now())
	if err != nil {
		return 0, err
	}
	return max(m.opts.ForceDailyBudget-n, 0), nil
}

// ForceDailyBudget returns the manager's force-refresh budget per WeChat
// day (TokenOptions.ForceDailyBudget after defaults).
func (m *TokenManager) ForceDailyBudget() int { return m.opts.ForceDailyBudget }

package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/budget"
)

var _ wxphone.ForceBudgetReader = (*TokenStore)(nil)

// ForceRefreshesOn implements wxphone.ForceBudgetReader: the force
// refreshes ReserveForceRefresh recorded for appID on now's WeChat day,
// read without changing anything.
func (s *TokenStore) ForceRefreshesOn(ctx context.Context, appID string, now time.Time) (int, error) {
	k, err := s.key(appID, "force")
	if err != nil {
		return 0, err
	}
	vals, err := s.c.HMGet(ctx, k, "day", "count").Result()
	if err != nil {
		return 0, fmt.Errorf("redis: read force-refresh budget: %w", err)
	}
	if len(vals) != 2 {
		return 0, errReply("HMGET")
	}
	day, _ := vals[0].(string)
	if day != budget.Day(now) {
		return 0, nil
	}
	cs, _ := vals[1].(string)
	n, err := strconv.Atoi(cs)
	if err != nil || n < 0 {
		return 0, errReply("HMGET")
	}
	return n, nil
}

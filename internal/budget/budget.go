// Package budget is WeChat's daily clock and the force-refresh rule: the
// calendar day of WeChat's time zone (UTC+8), when daily quotas and
// budgets reset, and whether one more force refresh is allowed. Every
// token store (wxphone's in-memory one, the Redis one) applies the same
// rule, written here once.
package budget

import "time"

// zone is WeChat's day boundary (UTC+8) for daily quotas and budgets.
var zone = time.FixedZone("UTC+8", 8*60*60)

// Day returns the calendar day, in WeChat's time zone (UTC+8), that t
// falls on, as "2006-01-02". Daily quotas reset at its midnight.
func Day(t time.Time) string { return t.In(zone).Format(time.DateOnly) }

// NextMidnight returns the next midnight in WeChat's time zone (UTC+8)
// after t, when daily quotas and budgets reset.
func NextMidnight(t time.Time) time.Time {
	l := t.In(zone)
	return time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, zone)
}

// Force decides one force-refresh reservation: given the last force time,
// the count of the day countDay, the least interval between two and the
// daily limit, it reports whether another is allowed at now and, if not,
// how long until one may be.
func Force(now, last time.Time, countDay string, count int, minInterval time.Duration, dailyLimit int) (ok bool, retryAfter time.Duration) {
	if countDay != Day(now) {
		count = 0
	}
	if !last.IsZero() && now.Sub(last) < minInterval {
		return false, minInterval - now.Sub(last)
	}
	if count >= dailyLimit {
		return false, NextMidnight(now).Sub(now)
	}
	return true, 0
}

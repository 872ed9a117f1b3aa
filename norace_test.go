//go:build !race

package wxphone

const raceEnabled = false

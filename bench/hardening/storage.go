package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The shared verdicts' storage: what a gateway spends on what sits at a
// token's entry name, and how fast its sweeps empty a storage of expired
// entries. Each binary writes an entry for real first, and what is
// planted goes where that binary reads and sweeps (the layout changed
// between versions).
var (
	sweepWait = flag.Duration("sweep-wait", 3*time.Minute,
		"how long to wait for a gateway's sweeps to remove the expired entries planted")
	sweptEntries = flag.Int("swept-entries", 100_000, "how many expired entries to plant for the sweep")
)

// memoryCap is the resident memory past which a gateway is killed: what it
// reads at an entry's name may be endless; watchTime how long its memory
// is watched once it has been sent the token.
const (
	memoryCap = 1 << 30
	watchTime = 10 * time.Second
)

// storageSite is a gateway sharing verdicts through the storage.
func storageSite(clerkURL string) string {
	return "\tclerk_m2m {\n\t\tmachine_secret_key ak_bench\n\t\tapi_url " + clerkURL +
		"\n\t\tcache_ttl 10m\n\t\tshared_cache\n\t}\n\trespond \"through\""
}

// storageGlobals has the gateway keep its storage in dir.
func storageGlobals(dir string) string { return "\tstorage file_system " + strconv.Quote(dir) + "\n" }

// realEntry has a gateway of binary verify token, waits for the entry it
// writes in storage, and returns the entry's path.
func realEntry(binary, clerkURL, storage, token string) (string, error) {
	c, err := startCaddyWith(binary, storageGlobals(storage), storageSite(clerkURL))
	if err != nil {
		return "", err
	}
	defer c.Stop()
	if status := c.status(token); status != http.StatusOK {
		return "", fmt.Errorf("a valid token got %d", status)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if entries := entriesIn(storage); len(entries) == 1 {
			return entries[0], nil
		}
	}
	return "", errors.New("no entry written")
}

// entryName is the name of an entry's file: the MAC of its token.
var entryName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// entriesIn lists the entries under a storage folder.
func entriesIn(storage string) []string {
	var entries []string
	_ = filepath.WalkDir(filepath.Join(storage, "clerk_m2m", "verdicts"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && entryName.MatchString(d.Name()) {
			entries = append(entries, path)
		}
		return nil
	})
	return entries
}

// trappedEntries: at a token's entry name, a link to /dev/zero, a 3 GiB
// sparse file, a pipe; a gateway that has not seen the token is sent it,
// then stopped. It records the answer and how long it took, the gateway's
// peak memory, and how long it took to stop.
func trappedEntries(binary string, _ *rsa.PrivateKey, record func(row, value string)) error {
	clerk, err := startClerk(func(context.Context, string) (int, []byte) { return http.StatusOK, m2mAnswer(nil) })
	if err != nil {
		return err
	}
	defer clerk.Close()
	traps := []struct {
		name  string
		plant func(path string) error
	}{
		{"a link to /dev/zero", func(path string) error { return os.Symlink("/dev/zero", path) }},
		{"a 3 GiB sparse file", func(path string) error {
			f, err := os.Create(path)
			if err == nil {
				err = errors.Join(f.Truncate(3<<30), f.Close())
			}
			return err
		}},
		{"a pipe", func(path string) error { return syscall.Mkfifo(path, 0o600) }},
	}
	for _, trap := range traps {
		storage, err := os.MkdirTemp("", "hardening-storage-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(storage)
		token := "mt_" + strings.Repeat("7", 32)
		entry, err := realEntry(binary, clerk.url, storage, token)
		if err != nil {
			return err
		}
		if err := os.Remove(entry); err != nil {
			return err
		}
		if err := trap.plant(entry); err != nil {
			return err
		}
		c, err := startCaddyWith(binary, storageGlobals(storage), storageSite(clerk.url))
		if err != nil {
			return err
		}
		answer, peak, killed := c.statusWatched(token)
		stopped := "(killed)"
		if !killed {
			stopped = c.stopWithin(10 * time.Second)
		}
		c.Stop()
		record("storage, "+trap.name+" at the entry: the answer, and in", answer)
		record("storage, "+trap.name+" at the entry: the gateway's peak memory", peak)
		record("storage, "+trap.name+" at the entry: stopping (SIGINT) took", stopped)
	}
	return nil
}

// statusWatched sends token, and watches the gateway's memory for
// watchTime from then (what it read may go on growing after it answered),
// killing it if it passes memoryCap. It returns the answer with how long
// it took (or what became of the gateway), the peak memory, and whether
// it killed the gateway.
func (c *caddy) statusWatched(token string) (answer, peak string, killed bool) {
	start := time.Now()
	done := make(chan int, 1)
	go func() { done <- c.status(token) }()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for time.Since(start) < watchTime || answer == "" {
		select {
		case status := <-done:
			answer = fmt.Sprintf("%d in %v", status, time.Since(start).Round(time.Millisecond))
		case <-ticker.C:
			if rss := c.memory("VmRSS"); rss > memoryCap {
				c.kill()
				return cmp.Or(answer+"; then", "none:") + fmt.Sprintf(" past %.0f MiB after %v, killed", mib(rss),
					time.Since(start).Round(time.Millisecond)), fmt.Sprintf("> %.0f MiB", mib(memoryCap)), true
			}
		}
	}
	return answer, c.peakMemory(), false
}

// stopWithin asks the gateway to stop (SIGINT), kills it if it has not in
// time, and says how long it took.
func (c *caddy) stopWithin(limit time.Duration) string {
	start := time.Now()
	if err := syscall.Kill(c.Pid(), syscall.SIGINT); err != nil {
		return "already gone"
	}
	select {
	case <-c.Exited():
		return time.Since(start).Round(time.Millisecond).String()
	case <-time.After(limit):
		c.kill()
		return fmt.Sprintf("not stopped after %v, killed", limit)
	}
}

// kill kills the gateway, and waits until it has ended.
func (c *caddy) kill() {
	_ = syscall.Kill(c.Pid(), syscall.SIGKILL)
	<-c.Exited()
}

// memory is a field of the process's /proc status, in bytes (VmRSS: its
// resident memory; VmHWM: its peak).
func (c *caddy) memory(field string) uint64 {
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if err != nil {
		return 0
	}
	defer status.Close()
	lines := bufio.NewScanner(status)
	for lines.Scan() {
		if value, ok := strings.CutPrefix(lines.Text(), field+":"); ok {
			kib, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			return kib << 10
		}
	}
	return 0
}

func (c *caddy) peakMemory() string { return fmt.Sprintf("%.0f MiB", mib(c.memory("VmHWM"))) }

// sweepThroughput: expired entries planted where the binary files them,
// and a gateway left to sweep them, for at most -sweep-wait.
func sweepThroughput(binary string, _ *rsa.PrivateKey, record func(row, value string)) error {
	clerk, err := startClerk(func(context.Context, string) (int, []byte) { return http.StatusOK, m2mAnswer(nil) })
	if err != nil {
		return err
	}
	defer clerk.Close()
	storage, err := os.MkdirTemp("", "hardening-sweep-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(storage)
	entry, err := realEntry(binary, clerk.url, storage, "mt_"+strings.Repeat("5", 32))
	if err != nil {
		return err
	}
	planted, err := plantExpired(storage, entry, *sweptEntries)
	if err != nil {
		return err
	}
	// The floor: as many files of the same age, removed by os.RemoveAll.
	floor, err := os.MkdirTemp("", "hardening-floor-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(floor)
	if _, err := plantExpired(floor, filepath.Join(floor, strings.TrimPrefix(entry, storage)), *sweptEntries); err != nil {
		return err
	}
	started := time.Now()
	c, err := startCaddyWith(binary, storageGlobals(storage), storageSite(clerk.url))
	if err != nil {
		return err
	}
	defer c.Stop()
	row := fmt.Sprintf("sweep: %d expired entries in a file_system storage", *sweptEntries)
	// Watched with Stat, which does not hold the folders up as reading
	// them would: a sweep has begun once a folder is gone or changed; it is
	// done once they are gone, or empty (read once a second).
	modified := map[string]time.Time{}
	for _, folder := range planted {
		info, err := os.Stat(folder)
		if err != nil {
			return err
		}
		modified[folder] = info.ModTime()
	}
	emptied := func(folder string, read bool) bool {
		if _, err := os.Stat(folder); err != nil {
			return true
		}
		if !read {
			return false
		}
		names, err := os.ReadDir(folder)
		return err == nil && len(names) == 0
	}
	var began time.Time
	for tick, deadline := 0, time.Now().Add(*sweepWait); time.Now().Before(deadline); tick++ {
		for _, folder := range planted {
			if info, err := os.Stat(folder); began.IsZero() && (err != nil || !info.ModTime().Equal(modified[folder])) {
				began = time.Now()
			}
		}
		done := !began.IsZero()
		for _, folder := range planted {
			done = done && emptied(folder, tick%50 == 0)
		}
		if done {
			took := time.Since(began)
			start := time.Now()
			if err := os.RemoveAll(floor); err != nil {
				return err
			}
			record(row, fmt.Sprintf("removed %.0f s after the start, in %v (%.0f a second), %.1f times os.RemoveAll's time",
				began.Sub(started).Seconds(), took.Round(time.Millisecond), float64(*sweptEntries)/took.Seconds(),
				took.Seconds()/time.Since(start).Seconds()))
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if began.IsZero() {
		record(row, fmt.Sprintf("none removed within %v of the start", *sweepWait))
	} else {
		record(row, fmt.Sprintf("some, not all, removed within %v of the start", *sweepWait))
	}
	return nil
}

// plantExpired writes n expired entries beside the real one, in the
// layout its path shows: clerk_m2m/verdicts/<scope>/<MAC>, whose entries
// say when they expire, or clerk_m2m/verdicts/<minute>/<scope>/<MAC>,
// filed by the minute they expire in (spread over ten minutes, as a fleet
// that verifies n/600 new tokens a second would leave them). It returns
// the folders planted.
func plantExpired(storage, real string, n int) ([]string, error) {
	rel, err := filepath.Rel(filepath.Join(storage, "clerk_m2m", "verdicts"), real)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(rel, string(filepath.Separator))
	expired := time.Now().Add(-time.Hour)
	var folders []string
	var entry []byte
	switch len(parts) {
	case 2: // by scope: the sweep reads each entry's expiry from its first line
		folders = []string{filepath.Join(storage, "clerk_m2m", "verdicts", strings.Repeat("0", 64))}
		entry = fmt.Appendf(nil, "clerk_m2m-verdict 1 %d %064x\n{}", expired.UnixMilli(), 0)
	case 3: // by minute: the sweep removes past minutes' folders; ten of them here
		minute := expired.Unix() / 60
		for m := minute - 10; m < minute; m++ {
			folders = append(folders, filepath.Join(storage, "clerk_m2m", "verdicts", strconv.FormatInt(m, 10), parts[1]))
		}
		entry = []byte(strings.Repeat("e", 400))
	default:
		return nil, fmt.Errorf("an entry at %s: a layout this program does not know", rel)
	}
	for _, folder := range folders {
		if err := os.MkdirAll(folder, 0o700); err != nil {
			return nil, err
		}
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(folders[i%len(folders)], fmt.Sprintf("%064x", i)), entry, 0o600); err != nil {
			return nil, err
		}
	}
	return folders, nil
}

package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go runs on.
const clockTicks = 100

// cpuSample is the CPU time used so far by the whole machine and by the
// processes of the measurement (Caddy and this program; wrk's comes from
// its own usage when it exits).
type cpuSample struct {
	at          time.Time
	machine     time.Duration // every core, every process, the kernel's work for them and time stolen by the hypervisor
	caddy, self time.Duration
}

func sampleCPU(caddyPID int) (cpuSample, error) {
	s := cpuSample{at: time.Now()}
	var err error
	if s.machine, err = machineBusy(); err != nil {
		return s, err
	}
	if s.caddy, err = processCPU(fmt.Sprintf("/proc/%d/stat", caddyPID)); err != nil {
		return s, err
	}
	s.self, err = processCPU("/proc/self/stat")
	return s, err
}

// otherCPU is how many cores, on average between two samples, went to
// anything but Caddy, wrk (which used wrkCPU) and this program: other
// processes, or a hypervisor's other guests.
func otherCPU(before, after cpuSample, wrkCPU time.Duration) float64 {
	elapsed := after.at.Sub(before.at)
	if elapsed <= 0 {
		return 0
	}
	ours := (after.caddy - before.caddy) + (after.self - before.self) + wrkCPU
	return float64(after.machine-before.machine-ours) / float64(elapsed)
}

func machineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseMachineBusy(data)
}

// parseMachineBusy adds up the "cpu" line of /proc/stat but for idle and
// iowait: user, nice, system, irq, softirq and steal (guest time is already
// in user and nice).
func parseMachineBusy(procStat []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(procStat, []byte("\n"))
	fields := bytes.Fields(line)
	if len(fields) < 9 || string(fields[0]) != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	const idle, iowait = 4, 5
	var ticks int64
	for i := 1; i <= 8; i++ {
		if i == idle || i == iowait {
			continue
		}
		n, err := strconv.ParseInt(string(fields[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %v", err)
		}
		ticks += n
	}
	return ticksToDuration(ticks), nil
}

func processCPU(path string) (time.Duration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseProcessCPU(data)
}

// parseProcessCPU reads utime and stime, fields 14 and 15 of
// /proc/<pid>/stat, counted after the command name in parentheses (which
// may itself hold spaces and parentheses).
func parseProcessCPU(stat []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("unexpected process stat: %q", stat)
	}
	fields := bytes.Fields(stat[end+1:]) // fields[0] is field 3, the state
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("unexpected process stat: %q", stat)
	}
	var ticks int64
	for _, i := range []int{utime, stime} {
		n, err := strconv.ParseInt(string(fields[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("process stat: %v", err)
		}
		ticks += n
	}
	return ticksToDuration(ticks), nil
}

func ticksToDuration(ticks int64) time.Duration {
	return time.Duration(ticks) * time.Second / clockTicks
}

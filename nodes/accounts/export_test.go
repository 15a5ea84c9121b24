package accounts

import "time"

// Test seams: the rest of the tests use the package from outside.

// SetBudget replaces the per-address budget of password checks, so a
// test can make more attempts from one address than the default allows
// (or stop refills while it runs).
func SetBudget(s *Service, burst int, every time.Duration) { s.budget = newBudget(burst, every) }

// SetHashPool replaces the password-hashing pool with one of workers
// that waits up to wait for a worker; gate, when not nil, runs on the
// worker before each hash, so a test can hold hashes in flight.
func SetHashPool(s *Service, workers int, wait time.Duration, gate func()) {
	s.hasher = newHasher(workers, wait)
	s.hasher.gate = gate
}

// Free failures before each slowdown starts.
var (
	FreePerPair    = slowPair.free
	FreePerAddress = slowAddress.free
	FreePerAccount = slowAccount.free
)

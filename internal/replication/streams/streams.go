// Package streams names the standard streams of the 2020 replication
// protocol (docs/protocol.md). It is the one list: the protocol engine, the
// row catalogue and the API types refer to it, and it imports nothing, so
// any package may.
package streams

// The standard streams, as named on the wire.
const (
	Events         = "events"
	Backfill       = "backfill"
	Presence       = "presence"
	Typing         = "typing"
	Receipts       = "receipts"
	PushRules      = "push_rules"
	Pushers        = "pushers"
	Caches         = "caches"
	PublicRooms    = "public_rooms"
	DeviceLists    = "device_lists"
	ToDevice       = "to_device"
	Federation     = "federation"
	TagAccountData = "tag_account_data"
	AccountData    = "account_data"
	Groups         = "groups"
	UserSignature  = "user_signature"
)

// standard is in the order docs/protocol.md lists the streams.
var standard = [...]string{
	Events, Backfill, Presence, Typing, Receipts, PushRules, Pushers, Caches,
	PublicRooms, DeviceLists, ToDevice, Federation, TagAccountData, AccountData,
	Groups, UserSignature,
}

// Standard returns the standard streams in docs/protocol.md's order, in a
// new slice the caller may change.
func Standard() []string {
	out := make([]string, len(standard))
	copy(out, standard[:])
	return out
}

// IsStandard reports whether name is a standard stream.
func IsStandard(name string) bool {
	for _, s := range standard {
		if s == name {
			return true
		}
	}
	return false
}

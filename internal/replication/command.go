package replication

import "encoding/json"

// Command is one line of the replication protocol. Each command name has its
// own type; ParseCommand builds them and AppendCommand puts them on the wire.
type Command interface {
	// Name is the command's name as it appears on the wire, e.g. "RDATA".
	Name() string
}

// The command names of the protocol, exactly as on the wire.
const (
	CmdServer          = "SERVER"
	CmdRdata           = "RDATA"
	CmdPosition        = "POSITION"
	CmdError           = "ERROR"
	CmdPing            = "PING"
	CmdSync            = "SYNC"
	CmdName            = "NAME"
	CmdReplicate       = "REPLICATE"
	CmdUserSync        = "USER_SYNC"
	CmdFederationAck   = "FEDERATION_ACK"
	CmdRemovePusher    = "REMOVE_PUSHER"
	CmdInvalidateCache = "INVALIDATE_CACHE"
	CmdUserIP          = "USER_IP"
)

// ReplicateAll is the stream name that, with NOW, subscribes to every stream
// the server publishes.
const ReplicateAll = "ALL"

// commandID numbers the commands: it indexes commandTable and the
// per-connection counters, which are arrays so the hot paths touch no map.
type commandID int8

const (
	idServer commandID = iota
	idRdata
	idPosition
	idError
	idPing
	idSync
	idName
	idReplicate
	idUserSync
	idFederationAck
	idRemovePusher
	idInvalidateCache
	idUserIP
	numCommands
	// idUnknown is a name that is not a command of the protocol.
	idUnknown commandID = -1
)

// commandTable is the one description of each command: its name on the
// wire and which side may send it. Lists, direction checks, interning and
// counters are all derived from it.
var commandTable = [numCommands]struct {
	name       string
	fromServer bool
	fromClient bool
}{
	idServer:          {CmdServer, true, false},
	idRdata:           {CmdRdata, true, false},
	idPosition:        {CmdPosition, true, false},
	idError:           {CmdError, true, true},
	idPing:            {CmdPing, true, true},
	idSync:            {CmdSync, true, true},
	idName:            {CmdName, false, true},
	idReplicate:       {CmdReplicate, false, true},
	idUserSync:        {CmdUserSync, false, true},
	idFederationAck:   {CmdFederationAck, false, true},
	idRemovePusher:    {CmdRemovePusher, false, true},
	idInvalidateCache: {CmdInvalidateCache, false, true},
	idUserIP:          {CmdUserIP, false, true},
}

// ServerCommands lists the commands a server may send (and so a client may
// receive), in the order of commandTable.
var ServerCommands = commandNames(func(id commandID) bool { return commandTable[id].fromServer })

// ClientCommands lists the commands a client may send (and so a server may
// receive), in the order of commandTable.
var ClientCommands = commandNames(func(id commandID) bool { return commandTable[id].fromClient })

// AllCommands lists every command name of the protocol.
var AllCommands = commandNames(func(commandID) bool { return true })

func commandNames(keep func(commandID) bool) []string {
	var names []string
	for id := range numCommands {
		if keep(id) {
			names = append(names, commandTable[id].name)
		}
	}
	return names
}

// commandIDOf returns the id of a command name, idUnknown for another name.
func commandIDOf(name string) commandID {
	_, id := internName([]byte(name))
	return id
}

// SentByServer reports whether a server may send the named command.
func SentByServer(name string) bool {
	id := commandIDOf(name)
	return id != idUnknown && commandTable[id].fromServer
}

// SentByClient reports whether a client may send the named command.
func SentByClient(name string) bool {
	id := commandIDOf(name)
	return id != idUnknown && commandTable[id].fromClient
}

// ServerCommand is the first line a server sends: its server name, which the
// client checks against the name it expects.
//
// The field is ServerName, not Name, because Name is the Command method.
type ServerCommand struct {
	ServerName string
}

// RdataCommand carries one row of a stream. Batch marks every row of a batch
// but the last: such a line carries the token word "batch" instead of a
// number, and Token is then ignored when formatting (and 0 when parsed).
type RdataCommand struct {
	Stream string
	Token  int64
	Batch  bool
	// Row is the row's JSON (an array). Parsed rows hold the bytes as
	// received; formatting re-encodes them the way Python's json does.
	Row json.RawMessage
}

// PositionCommand tells a client that a stream is at Token; the server sends
// it when a subscription has caught up.
type PositionCommand struct {
	Stream string
	Token  int64
}

// ErrorCommand reports an error to the peer; it is usually followed by a close.
type ErrorCommand struct {
	Message string
}

// PingCommand is the keep-alive. Data is free text, by convention the
// sender's clock in milliseconds since the epoch.
type PingCommand struct {
	Data string
}

// SyncCommand is a test aid: free text a peer can wait for.
type SyncCommand struct {
	Data string
}

// NameCommand gives a client connection a human-friendly name.
// The field is ClientName, not Name, because Name is the Command method.
type NameCommand struct {
	ClientName string
}

// ReplicateCommand subscribes to a stream. With Now the client wants only
// future rows (Token is ignored); otherwise it wants the rows after Token.
// Stream may be ReplicateAll only together with Now.
type ReplicateCommand struct {
	Stream string
	Token  int64
	Now    bool
}

// UserSyncCommand says a user started (Active) or stopped syncing on the
// sending worker.
type UserSyncCommand struct {
	UserID     string
	Active     bool
	LastSyncMS int64
}

// FederationAckCommand says the federation sender processed the federation
// stream up to Token.
type FederationAckCommand struct {
	Token int64
}

// RemovePusherCommand asks the master to delete a pusher. UserID is the rest
// of the line and may contain spaces.
type RemovePusherCommand struct {
	AppID, PushKey, UserID string
}

// InvalidateCacheCommand asks the master to invalidate a cache. Keys is a
// JSON list.
type InvalidateCacheCommand struct {
	CacheFunc string
	Keys      json.RawMessage
}

// UserIPCommand reports a client request seen by a worker. On the wire it is
// `<user_id> [access_token, ip, user_agent, device_id, last_seen]`; DeviceID
// nil is JSON null.
type UserIPCommand struct {
	UserID      string
	AccessToken string
	IP          string
	UserAgent   string
	DeviceID    *string
	LastSeen    int64
}

// Name implements Command.
func (ServerCommand) Name() string { return CmdServer }

// Name implements Command.
func (RdataCommand) Name() string { return CmdRdata }

// Name implements Command.
func (PositionCommand) Name() string { return CmdPosition }

// Name implements Command.
func (ErrorCommand) Name() string { return CmdError }

// Name implements Command.
func (PingCommand) Name() string { return CmdPing }

// Name implements Command.
func (SyncCommand) Name() string { return CmdSync }

// Name implements Command.
func (NameCommand) Name() string { return CmdName }

// Name implements Command.
func (ReplicateCommand) Name() string { return CmdReplicate }

// Name implements Command.
func (UserSyncCommand) Name() string { return CmdUserSync }

// Name implements Command.
func (FederationAckCommand) Name() string { return CmdFederationAck }

// Name implements Command.
func (RemovePusherCommand) Name() string { return CmdRemovePusher }

// Name implements Command.
func (InvalidateCacheCommand) Name() string { return CmdInvalidateCache }

// Name implements Command.
func (UserIPCommand) Name() string { return CmdUserIP }

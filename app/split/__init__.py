"""Split mode: the same modules as separate processes behind one gateway process, over NATS.

Everything that exists only because the processes are apart lives here: the cluster that
starts them (cluster), the events' transport over the broker (nats_transport), how module
processes announce themselves and the gateway finds them (discovery), how the gateway
forwards a request (forwarding) with a proof that it sent it (proof), credentials checked
across processes (credentials), a module process's side of it (module_process), the gateway
alone (gateway), and the one way each of them connects to the broker (nats).
"""

"""meshctl: the mesh's command line, a client of the HTTP API only.

    meshctl members | services [NAME] | watch | links      ask a distributor (--url)
    meshctl status | request                              ask a node (--node)

Exit codes: 0 ok, 1 an error answer (4xx/5xx, or not the mesh API), 2 usage,
3 unreachable. Errors are one line on stderr.
"""

"""Training on more than one device or process, on TensorFlow's own runtime.

    devices.py        in-graph replication on one machine: one tower per device
                      (graph.build_training_graph(config, devices=...) builds the towers)
    cluster.py        the cluster spec: TF_CONFIG or --cluster/--job-name/--task-index
    distributed.py    between-graph replicated training on TF's gRPC runtime (ps/worker)
    cluster_local.py  `fcn-tf1 cluster-local`: start, stream and stop a localhost cluster
"""

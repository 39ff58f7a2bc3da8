"""What operators see: Prometheus metrics (``metrics``), the queue gauges sampled from
Redis (``queue_gauges``) and the gRPC health endpoint of every process (``health``)."""

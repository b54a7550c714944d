"""The queue: the huey instance over Redis (instance: it imports no tasks), its signed JSON tasks
(taskcodec), the consumer and the worker command, the worker's heartbeat and the dead letters."""

"""PostgreSQL: the pool, the migrations, the batched writers."""

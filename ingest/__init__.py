"""Getting data in (and out): dataset import/export, and raw documents to pairs."""

"""The cluster side: watches, constraint CRDs, status, audit and sync, with the official client."""
